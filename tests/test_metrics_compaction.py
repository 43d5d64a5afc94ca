"""Compaction of dead processes' metric files (``observability/metrics/compaction.py``): real
processes write real files; the merged exposition must not change, nor any counter go down."""

import fcntl
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from observability.metrics import compaction
from observability.metrics import directory as metrics_dir
from observability.metrics.multiprocess import (
    exposition_registry,
    read_merged,
    readable_files,
    reap_dead,
)

# One process's metrics: every kind and gauge mode, values from argv[1] (n: exact in binary).
WRITER = """
import sys
from prometheus_client import Counter, Gauge, Histogram, Summary
n = float(sys.argv[1])
jobs = Counter('jobs', 'Jobs done.', ['kind'])
jobs.labels('a').inc(n)
jobs.labels('b').inc(2 * n)
Histogram('latency_seconds', 'Latency.', buckets=(0.25, 1.0, 4.0)).observe(0.5 * n)
Summary('sizes', 'Sizes.').observe(n)
Gauge('peak', 'Peak.', multiprocess_mode='max').set(n)
Gauge('floor', 'Floor.', multiprocess_mode='min').set(n)
Gauge('total', 'Total.', multiprocess_mode='sum').set(n)
Gauge('latest', 'Latest.', multiprocess_mode='mostrecent').set(n)
Gauge('queued', 'Queued.').set(n)
Gauge('busy', 'Busy.', multiprocess_mode='livesum').set(n)
if len(sys.argv) > 2:
    print('ready', flush=True)
    sys.stdin.read()
"""
# The service's own task metrics, as a worker process declares and counts them.
TASK_WRITER = """
from prometheus_client import CollectorRegistry
from observability.metrics.tasks import TaskMetrics
metrics = TaskMetrics(CollectorRegistry())
metrics.declare(['send'], 'celery', ['success', 'failure'])
metrics.enqueued.labels('send', 'celery').inc(3)
metrics.duration.labels('send', 'celery', 'success').observe(0.5)
"""
ARCHIVES = {
    "counter_archive.db",
    "histogram_archive.db",
    "summary_archive.db",
    "gauge_max_archive.db",
    "gauge_min_archive.db",
    "gauge_sum_archive.db",
    "gauge_mostrecent_archive.db",
}


def run_dead(path: Path, n: float, script: str = WRITER) -> int:
    """A process that writes its metrics to ``path`` and exits; its pid."""
    env = os.environ | {metrics_dir.ENV: str(path)}
    child = subprocess.Popen([sys.executable, "-c", script, str(n)], env=env)
    assert child.wait() == 0
    return child.pid


@pytest.fixture
def live(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that has written its metrics (n = 10) and runs until the test ends."""
    env = os.environ | {metrics_dir.ENV: str(tmp_path)}
    cmd = [sys.executable, "-c", WRITER, "10", "stay"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.communicate("")


def plain_exposition(path: Path) -> list[str]:
    """What the scrape served before compaction existed: every file merged (live gauges of dead
    processes dropped); sorted lines (the order of series follows the order of files)."""
    reap_dead(path)
    return _lines(MultiProcessCollector.merge(readable_files(path), accumulate=True))  # type: ignore[no-untyped-call]


def _lines(metrics: Iterable[Metric]) -> list[str]:
    class Fixed(Collector):
        def collect(self) -> Iterable[Metric]:
            return metrics

    registry = CollectorRegistry()
    registry.register(Fixed())
    return sorted(generate_latest(registry).decode().splitlines())


def without_pids(lines: list[str], pids: list[int]) -> list[str]:
    """``lines`` less the ``all``-mode gauge series of ``pids`` (dropped with their files)."""
    return [line for line in lines if not any(f'pid="{pid}"' in line for pid in pids)]


def sample(lines: list[str], prefix: str) -> float:
    found = [line for line in lines if line.startswith(prefix + " ")]
    assert len(found) == 1, (prefix, found)
    return float(found[0].rsplit(" ", 1)[1])


def test_compaction_keeps_the_exposition_and_leaves_archives_and_live_files(
    tmp_path: Path, live: subprocess.Popen[str]
) -> None:
    dead = [run_dead(tmp_path, n) for n in (1, 2, 4)]
    live_files = {f: f.read_bytes() for f in tmp_path.glob(f"*_{live.pid}.db")}
    before = plain_exposition(tmp_path)
    assert compaction.compact(tmp_path) == 3 * 8  # 3 processes x 8 files (live gauges reaped)
    after = plain_exposition(tmp_path)
    assert after == without_pids(before, dead)
    assert any(f'pid="{dead[0]}"' in line for line in before)  # the `all` gauge, dropped
    left = {f.name for f in tmp_path.glob("*.db")}
    assert left == ARCHIVES | {f.name for f in live_files}
    assert {f: f.read_bytes() for f in live_files} == live_files  # never touched
    assert sample(after, 'jobs_total{kind="a"}') == 1 + 2 + 4 + 10
    assert sample(after, "latency_seconds_sum") == 0.5 * (1 + 2 + 4 + 10)
    assert sample(after, 'latency_seconds_bucket{le="1.0"}') == 2  # 0.5, 1.0
    assert sample(after, "peak") == 10 and sample(after, "floor") == 1
    assert sample(after, "total") == 17 and sample(after, "latest") == 4  # the last one set
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.compacting"))


def test_a_second_round_adds_up_in_the_existing_archive(
    tmp_path: Path, live: subprocess.Popen[str]
) -> None:
    run_dead(tmp_path, 1)
    run_dead(tmp_path, 2, TASK_WRITER)
    compaction.compact(tmp_path)
    dead = [run_dead(tmp_path, 4), run_dead(tmp_path, 8, TASK_WRITER), run_dead(tmp_path, 16)]
    before = plain_exposition(tmp_path)
    assert compaction.compact(tmp_path) > 0
    after = plain_exposition(tmp_path)
    assert after == without_pids(before, dead)
    assert sample(after, 'jobs_total{kind="b"}') == 2 * (1 + 4 + 16 + 10)
    assert sample(after, 'background_task_enqueued_total{backend="celery",task="send"}') == 6
    assert sample(after, "peak") == 16 and sample(after, "latest") == 16
    assert sample(after, "sizes_count") == 4 and sample(after, "sizes_sum") == 31


def test_the_scrape_compacts_and_its_files_stay_bounded(tmp_path: Path) -> None:
    """Through the exposition registry, as ``/metrics`` serves it: however many processes
    died, the scrape reads the same number of files, and the totals keep adding up."""
    registry = exposition_registry(tmp_path)
    counts = []
    for round_ in range(1, 5):
        run_dead(tmp_path, 1)
        run_dead(tmp_path, 2)
        lines = sorted(generate_latest(registry).decode().splitlines())
        counts.append(len(readable_files(tmp_path)))
        assert sample(lines, 'jobs_total{kind="a"}') == 3 * round_
    assert counts == [len(ARCHIVES)] * 4


def test_a_crash_before_the_commit_is_resumed(tmp_path: Path, live: subprocess.Popen[str]) -> None:
    """Staged files and temp archives left by a crashed compaction: a scrape compacts them
    (never reads the state as it is: the staged values would be missing)."""
    run_dead(tmp_path, 1)
    compaction.compact(tmp_path)
    dead = run_dead(tmp_path, 2)
    expected = without_pids(plain_exposition(tmp_path), [dead])
    with compaction.locked(tmp_path, shared=False):
        _, staged = compaction.prepare(tmp_path)  # ... and the compacting process dies
    assert staged
    assert list(tmp_path.glob("*.db.tmp"))
    assert not (tmp_path / f"counter_{dead}.db").exists()
    after = _lines(read_merged(tmp_path))
    assert after == expected
    assert sample(after, 'jobs_total{kind="a"}') == 1 + 2 + 10
    assert not list(tmp_path.glob("*.compacting")) and not list(tmp_path.glob("*.tmp"))


def test_a_crash_after_the_commit_is_rolled_forward(
    tmp_path: Path, live: subprocess.Popen[str]
) -> None:
    dead = [run_dead(tmp_path, 1), run_dead(tmp_path, 2)]
    expected = without_pids(plain_exposition(tmp_path), dead)
    with compaction.locked(tmp_path, shared=False):
        replace, staged = compaction.prepare(tmp_path)
        compaction.commit(tmp_path, replace, staged)  # ... and the compacting process dies
    assert (tmp_path / compaction.JOURNAL).exists()
    assert _lines(read_merged(tmp_path)) == expected
    assert not (tmp_path / compaction.JOURNAL).exists()
    assert not list(tmp_path.glob("*.compacting"))


def test_a_staged_file_of_a_running_pid_goes_back(
    tmp_path: Path, live: subprocess.Popen[str]
) -> None:
    """A pid reused: the process that runs with it may have opened the file before it was
    staged; it gets it back, unless it has a file of its own (then the staged one is the dead
    process's, and is compacted)."""
    counter = tmp_path / f"counter_{live.pid}.db"
    content = counter.read_bytes()
    counter.rename(tmp_path / (counter.name + compaction.STAGED))
    histogram = tmp_path / f"histogram_{live.pid}.db"
    os.link(histogram, tmp_path / (histogram.name + compaction.STAGED))  # and its own copy
    assert compaction.compact(tmp_path) == 1
    assert counter.read_bytes() == content
    assert {f.name for f in tmp_path.glob("*_archive.db")} == {"histogram_archive.db"}


SCRAPER = """
import sys
from pathlib import Path
from observability.metrics.multiprocess import read_merged
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
while not stop.exists():
    for metric in read_merged(path):
        for s in metric.samples:
            if s.name == 'jobs_total' and s.labels == {'kind': 'a'}:
                print(s.value, flush=True)
"""


def test_concurrent_scrapes_never_see_a_counter_go_down(tmp_path: Path) -> None:
    """Scrapes in a thread and in another process (each compacting when it finds dead files)
    while processes die: every scrape's total is at least the one before, the last is exact."""
    path, stop_file = tmp_path / "metrics", tmp_path / "stop"
    path.mkdir()
    stop = threading.Event()
    seen: list[float] = []

    def scrape() -> None:
        while not stop.is_set():
            seen.append(sample(_lines(read_merged(path)), 'jobs_total{kind="a"}'))

    run_dead(path, 1)
    cmd = [sys.executable, "-c", SCRAPER, str(path), str(stop_file)]
    other = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for _ in range(12):
            run_dead(path, 1)
    finally:
        stop.set()
        stop_file.touch()
        thread.join()
        out, _ = other.communicate(timeout=30)
    assert other.returncode == 0
    for totals in (seen, [float(line) for line in out.split()]):
        assert len(totals) > 1 and all(a <= b for a, b in itertools.pairwise(totals))
    assert sample(_lines(read_merged(path)), 'jobs_total{kind="a"}') == 13


def test_rounding_never_makes_a_total_go_down(tmp_path: Path) -> None:
    """Float sums depend on their order: with values where the archive's plain sum would make
    the scrape's total lower than before (a counter reset to Prometheus, for a rounding error),
    the archive's value is raised just enough."""
    dead = unused_pids_around(os.getpid())  # their files sort before and after the live one's
    names = {pid: f"counter_{pid}.db" for pid in [*dead, os.getpid()]}  # this process: live
    order = sorted(names, key=lambda pid: names[pid])
    assert order[1] == os.getpid()
    rng = random.Random(7)
    for _ in range(10_000):
        values = {pid: rng.uniform(0, 100) for pid in order}
        before = _sequential(values[pid] for pid in order)
        archive = _sequential(values[pid] for pid in sorted(dead, key=lambda pid: names[pid]))
        if _sequential([values[os.getpid()], archive]) < before:  # the live file sorts first
            break
    else:
        pytest.fail("no values found that a plain sum would round down")
    key = mmap_key("jobs", "jobs_total", ["kind"], ["a"], "Jobs done.")
    for pid, value in values.items():
        compaction.write(tmp_path / names[pid], {key: (value, 0.0)})
    after = sample(_lines(read_merged(tmp_path)), 'jobs_total{kind="a"}')  # compacts first
    assert {f.name for f in tmp_path.glob("*.db")} == {"counter_archive.db", names[os.getpid()]}
    assert after >= before and after <= math.nextafter(math.nextafter(before, 200), 200)


def unused_pids_around(pid: int) -> list[int]:
    """Two pids no process has now, the first named before ``pid`` in name order, the second
    after (the test writes files in their names)."""
    text, alive = str(pid), metrics_dir.alive
    lower = next(p for p in range(pid - 1, 1, -1) if str(p) < text and not alive(p))
    upper = next(p for p in range(pid + 1, 10 * pid + 10) if str(p) > text and not alive(p))
    return [lower, upper]


def _sequential(values: Iterable[float]) -> float:
    total = 0.0
    for value in values:
        total += value
    return total


def test_a_child_forked_under_the_lock_does_not_keep_it(tmp_path: Path) -> None:
    """A prefork pool forking a child while the metrics thread holds the lock: once the parent
    lets go, the lock is free (the child, still running, holds no copy of it)."""
    started, ready = os.pipe()
    with compaction.locked(tmp_path, shared=False):
        child = os.fork()
        if child == 0:  # the child (its fork hooks have run): says so, lives on, does nothing
            os.write(ready, b"x")
            time.sleep(30)
            os._exit(0)
    try:
        assert os.read(started, 1) == b"x"
        fd = os.open(tmp_path / compaction.LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
        finally:
            os.close(fd)
        assert metrics_dir.alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(started)
        os.close(ready)
