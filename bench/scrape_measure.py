"""What the ``scrape`` part measures on a target: scrapes (latency, server CPU), the metrics
directory (files, dead processes), worker restarts, and where a scrape's time goes.

A scrape is ``GET /metrics`` with the ``Accept`` header Prometheus sends (OpenMetrics
preferred), on a connection of its own: Prometheus scrapes every 15 s or so, longer than any
keep-alive the servers allow, so it connects every time (and under ``uvicorn --workers N`` the
kernel hands each connection to any worker). Scrapes are sequential, from this process.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import HOST, NoiseMeter, tree_cpu_seconds
from bench.scrape_targets import Target

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
IDLE_SECONDS = 1.0  # the tree's idle CPU is measured this long, and taken off the scrapes'


def scrape(port: int, path: str) -> tuple[float, bytes]:
    """One scrape: (seconds from connect to the last byte, body)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", path, headers={"Accept": ACCEPT})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    elapsed = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"GET {path} on port {port}: {resp.status}")
    return elapsed, body


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def directory_stats(path: Path | None) -> dict[str, int]:
    """The ``.db`` files of a multiprocess directory, the pids they belong to, and how many of
    those pids are dead (zeros in single-process mode)."""
    if path is None or not path.exists():
        return {"db_files": 0, "pids": 0, "dead_pids": 0}
    from observability.metrics.directory import alive

    files = list(path.glob("*.db"))
    pids = {int(s) for f in files if (s := f.stem.rsplit("_", 1)[-1]).isdigit()}
    dead = [pid for pid in pids if not alive(pid)]
    return {"db_files": len(files), "pids": len(pids), "dead_pids": len(dead)}


def measure(target: Target, count: int) -> dict[str, Any]:
    """``count`` sequential scrapes of ``target`` (after a few not counted): latency
    percentiles, the server tree's CPU per scrape (its idle CPU taken off), the exposition's
    size and series, the directory's files (read after the scrapes: the live-gauge files of dead
    processes are reaped by the first); then as many requests of the target's control path, the
    same way: the latency of an HTTP request that does next to nothing, on that server, under the
    machine's load of the moment (a p99 far above the scrape's CPU is waiting, not work)."""
    for _ in range(5):
        scrape(target.port, target.path)
    cpu0 = tree_cpu_seconds(target.pid)
    time.sleep(IDLE_SECONDS)
    idle_rate = (tree_cpu_seconds(target.pid) - cpu0) / IDLE_SECONDS
    latencies: list[float] = []
    body = b""
    noise = NoiseMeter()
    t0, cpu0 = time.monotonic(), tree_cpu_seconds(target.pid)
    for _ in range(count):
        elapsed, body = scrape(target.port, target.path)
        latencies.append(elapsed)
    wall, cpu = time.monotonic() - t0, tree_cpu_seconds(target.pid) - cpu0
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    control = [scrape(target.port, target.control_path)[0] for _ in range(count)]
    return {
        "scrapes": count,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "control_p50_ms": percentile(control, 0.5) * 1e3,
        "control_p99_ms": percentile(control, 0.99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "cpu_ms_per_scrape": max(0.0, cpu - idle_rate * wall) / count * 1e3,
        "idle_cpu_cores": idle_rate,
        "other_load_cores": noise.other_cores(cpu),
        "bytes": len(body),
        "series": series,
        **directory_stats(target.metrics_dir()),
    }


def restart_workers(target: Target, wanted: int, tasks_per_round: int) -> dict[str, Any]:
    """SIGKILL the target's workers (all at once, then wait for their replacements and put
    ``tasks_per_round`` tasks through them) until ``wanted`` workers were killed (their files
    are compacted by the scrapes in between: the directory no longer shows them)."""
    t0 = time.monotonic()
    killed: set[int] = set()
    while len(killed) < wanted:
        pids = target.workers()[: wanted - len(killed)]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # a worker of the tree we started
        killed.update(pids)
        target.wait_ready(killed, 90)
        target.drive(tasks_per_round)
    return {"kills": len(killed), "seconds": time.monotonic() - t0}


def breakdown(path: Path | None, tmp: Path, repeat: int = 5) -> dict[str, float] | None:
    """Where a scrape's time goes, in this process, on a copy of the directory (medians of
    ``repeat``): ``reap_ms`` (the dead processes' live-gauge files: none left after the
    scrapes), ``list_ms`` (listing the readable files), ``merge_ms`` (``merge.merged``: read,
    parse and add up every file), ``encode_ms`` (the OpenMetrics text of the merged families),
    and the same two steps as prometheus-client does them (``library_merge_ms``:
    ``MultiProcessCollector.merge``, ``library_encode_ms``: its OpenMetrics encoder), the
    before of issue 18."""
    if path is None or not path.exists():
        return None
    from prometheus_client.multiprocess import MultiProcessCollector

    from observability.metrics.encoder import openmetrics_text
    from observability.metrics.merge import merged
    from observability.metrics.multiprocess import readable_files, reap_dead

    copy = tmp / "breakdown"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy)
    steps = ("reap_ms", "list_ms", "merge_ms", "encode_ms", "library_merge_ms")
    times: dict[str, list[float]] = {key: [] for key in (*steps, "library_encode_ms")}
    for _ in range(repeat):
        t0 = time.perf_counter()
        reap_dead(copy)
        t1 = time.perf_counter()
        files = readable_files(copy)
        t2 = time.perf_counter()
        metrics = merged(files)
        t3 = time.perf_counter()
        openmetrics_text(metrics)
        t4 = time.perf_counter()
        library = list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
        t5 = time.perf_counter()
        times["library_encode_ms"].append(_library_encode(library) * 1e3)
        for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            times[key].append(dt * 1e3)
    shutil.rmtree(copy, ignore_errors=True)
    return {key: statistics.median(values) for key, values in times.items()}


def _library_encode(metrics: list[Any]) -> float:
    """Seconds prometheus-client's OpenMetrics encoder takes over metrics already merged."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.registry import Collector

    class Fixed(Collector):
        def collect(self) -> list[Any]:
            return metrics

    registry = CollectorRegistry()
    registry.register(Fixed())
    t0 = time.perf_counter()
    generate_latest(registry)  # type: ignore[no-untyped-call]
    return time.perf_counter() - t0
