"""Metrics of several processes served as one: prometheus-client's multiprocess mode.

Each process writes its values to mmap files in ``PROMETHEUS_MULTIPROC_DIR`` (see
``observability.metrics_dir``); whichever process serves ``/metrics`` merges the files of all.
Counters and histograms of processes that have exited keep counting (totals never go back);
``live*`` gauges of a dead process are dropped. Exemplars are not supported in this mode."""

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

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
    is skipped)."""
    files = []
    for file in path.glob(pattern):
        try:
            if file.stat().st_size >= _HEADER_BYTES:
                files.append(str(file))
        except FileNotFoundError:  # reaped meanwhile
            pass
    return files


class MultiProcessMetrics(Collector):
    """The merged metrics of every process writing to ``path``, dead processes reaped first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        reap_dead(self.path)
        files = readable_files(self.path)
        metrics: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return metrics


def exposition_registry(path: Path) -> CollectorRegistry:
    """A registry serving the merged metrics of the processes writing to ``path``."""
    registry = CollectorRegistry()
    registry.register(MultiProcessMetrics(path))
    return registry


def process_exited(path: Path, pid: int | None = None) -> None:
    """A process (this one by default) is exiting: its live gauges stop counting."""
    mark_process_dead(os.getpid() if pid is None else pid, str(path))  # type: ignore[no-untyped-call]
