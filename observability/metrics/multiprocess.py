"""Metrics of several processes served as one: prometheus-client's multiprocess mode.

Each process writes its values to mmap files in ``PROMETHEUS_MULTIPROC_DIR`` (see
``observability.metrics.directory``); whichever process serves ``/metrics`` merges the files of
all (``observability.metrics.merge``: prometheus-client's merge, for a third of its cost).
Counters and histograms of processes that have exited keep counting (totals never go back);
``live*`` gauges of a dead process are dropped. The files of dead processes are compacted into
archive files as a scrape finds them (``observability.metrics.compaction``), so a scrape reads the
live processes' files and a few archives, however many processes ran before. Exemplars are not
supported in this mode."""

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector

from observability.metrics import compaction, merge
from observability.metrics.directory import alive


def enabled() -> bool:
    """Whether prometheus-client runs in multiprocess mode in this process (decided when it was
    first imported, by ``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def reap_dead(path: Path) -> list[int]:
    """Drop the live-gauge files of processes that are gone (a child killed by SIGKILL, or by
    Celery's hard time limit, never cleans up after itself); returns their pids."""
    dead = set()
    for file in path.glob("gauge_live*_*.db"):
        suffix = file.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and not alive(int(suffix)):
            dead.add(int(suffix))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


# A process creates its file empty, then sizes it: until then it holds no value (and can't be
# read: prometheus-client's reader fails on it, which made a scrape racing a process start a 500).
_HEADER_BYTES = 8


def readable_files(path: Path, pattern: str = "*.db") -> list[str]:
    """The metric files (``pattern``) in ``path`` that hold values (a file still being created
    is skipped), in name order (the same order of addition for every reader)."""
    files = []
    for file in path.glob(pattern):
        try:
            if file.stat().st_size >= _HEADER_BYTES:
                files.append(str(file))
        except FileNotFoundError:  # reaped meanwhile
            pass
    return sorted(files)


def read_merged(path: Path, attempts: int = 3) -> list[Metric]:
    """The merged metrics of the files in ``path``, the files of dead processes compacted first,
    read under the directory's shared lock (never while a compaction is under way)."""
    for _ in range(attempts - 1):
        if compaction.needed(path):
            compaction.compact(path)
        with compaction.locked(path, shared=True):
            if not compaction.interrupted(os.listdir(path)):
                return _merge(path)
    with compaction.locked(path, shared=True):  # compactions keep crashing: read what is there
        return _merge(path)


def _merge(path: Path) -> list[Metric]:
    return merge.merged(readable_files(path))


class MultiProcessMetrics(Collector):
    """The merged metrics of every process writing to ``path``, dead processes reaped (their
    live gauges) and compacted (the rest) first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        reap_dead(self.path)
        return read_merged(self.path)


def exposition_registry(path: Path) -> CollectorRegistry:
    """A registry serving the merged metrics of the processes writing to ``path``."""
    registry = CollectorRegistry()
    registry.register(MultiProcessMetrics(path))
    return registry


def process_exited(path: Path, pid: int | None = None) -> None:
    """A process (this one by default) is exiting: its live gauges stop counting."""
    mark_process_dead(os.getpid() if pid is None else pid, str(path))  # type: ignore[no-untyped-call]
