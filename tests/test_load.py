"""Load against a real uvicorn process: a burst far beyond capacity stays bounded and fully
accounted for; a soak grows neither memory, files, threads nor series.
``NOTIFY_SOAK_SECONDS`` sets the soak's length (default 20 s; longer on demand)."""

import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.accounting import wait_balanced
from tests.support.fifo import FifoReader, make_fifo
from tests.support.metrics import sample_value
from tests.support.processes import ServiceProcess

SOAK_SECONDS = float(os.environ.get("NOTIFY_SOAK_SECONDS", "20"))


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (kB for memory fields)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
    assert match, field
    return int(match.group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_burst_beyond_capacity_is_bounded_and_accounted(start_service: Any, tmp_path: Path) -> None:
    """3000 requests from 16 clients against concurrency 2 and backlog 100, the sink stalled
    for the first third: every answer is 200 or 503 with Retry-After (no timeout, no 500), the
    backlog never passes its bound, memory stays bounded, and every task is accounted for
    exactly (accepted == enqueued == written; refused == dropped backlog_full)."""
    fifo = make_fifo(tmp_path / "data")
    service: ServiceProcess = start_service(
        NOTIFY_TASK_CONCURRENCY="2", NOTIFY_TASK_BACKLOG="100", NOTIFY_TASK_HISTORY_SIZE="500"
    )
    pid = service.process.pid
    rss_before_kb = proc_status(pid, "VmRSS")
    depths: list[float] = []
    done = threading.Event()
    sent = Counter[str]()
    reader: list[FifoReader] = []

    def watch() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            while not done.is_set():
                text = client.get("/metrics").text
                depths.append(
                    sample_value(text, "background_task_queue_depth", backend="inprocess")
                )
                time.sleep(0.02)

    def client_loop(n: int) -> tuple[list[str], list[str], Counter[str]]:
        accepted: list[str] = []
        refused: list[str] = []
        statuses = Counter[str]()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            for i in range(n):
                try:
                    response = client.post(f"/send-notification/u{i}@example.com")
                except httpx.TransportError as error:
                    statuses[type(error).__name__] += 1
                    continue
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    accepted += response.json()["task_ids"]
                elif response.status_code == 503:
                    assert response.headers["retry-after"].isdigit()
                    assert response.json()["reason"] == "backlog_full"
                    refused += response.json()["task_ids"]
                sent["total"] += 1
                if sent["total"] == 1000 and not reader:
                    reader.append(FifoReader(fifo, seconds=120))  # the sink unblocks
        return accepted, refused, statuses

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client_loop, [3000 // 16] * 16))
    done.set()
    watcher.join(5)
    accepted = [task for result in results for task in result[0]]
    refused = [task for result in results for task in result[1]]
    statuses = sum((result[2] for result in results), Counter[str]())
    assert set(statuses) <= {"200", "503"}, statuses
    assert statuses["503"] > 0 and statuses["200"] > 100
    assert max(depths) <= 100
    books = wait_balanced(service, timeout=60)
    ledger = books.ledgers["write_log"]
    assert ledger.enqueued == len(accepted) == ledger.succeeded
    assert ledger.dropped["backlog_full"] == ledger.refused["backlog_full"] == len(refused)
    assert len(accepted) + len(refused) == 3000 // 16 * 16
    assert len(reader[0].stop()) == len(accepted)
    peak_growth_mb = (proc_status(pid, "VmHWM") - rss_before_kb) / 1024
    for name, value in (
        ("statuses", dict(statuses)),
        ("max_queue_depth", max(depths)),
        ("rss_before_mb", rss_before_kb / 1024),
        ("peak_rss_growth_mb", peak_growth_mb),
    ):
        print(f"burst {name}: {value}")  # figures (pytest -s)
    assert peak_growth_mb < 80, peak_growth_mb


def test_soak_grows_no_memory_files_threads_or_series(start_service: Any) -> None:
    """Steady mixed traffic (successes, 4xx, lookups) for NOTIFY_SOAK_SECONDS: after a warm-up,
    resident memory, open file descriptors, threads and the /metrics series count stay flat,
    and the books balance at the end."""
    service: ServiceProcess = start_service(NOTIFY_TASK_HISTORY_SIZE="1000")
    pid = service.process.pid

    def traffic(seconds: float) -> Counter[str]:
        statuses = Counter[str]()
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=service.url, timeout=30) as client:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                for response in (
                    client.post(f"/send-notification/u{i}@example.com"),
                    client.post(f"/advanced-notification/u{i}@example.com", params={"q": "x"}),
                    client.post("/send-sms", params={"phone": "+15551234567", "msg": f"m{i}"}),
                    client.post("/safe-notify"),
                    client.post("/send-sms", params={"phone": "nope", "msg": "x"}),
                    client.get(f"/tasks/{i:032x}"),
                ):
                    statuses[str(response.status_code)] += 1
                time.sleep(0.005)
        return statuses

    def snapshot() -> dict[str, int]:
        return {
            "rss_kb": proc_status(pid, "VmRSS"),
            "threads": proc_status(pid, "Threads"),
            "fds": open_fds(pid),
            "series": series_count(service.metrics()),
        }

    def run(seconds: float) -> Counter[str]:
        with ThreadPoolExecutor(3) as pool:
            return sum(pool.map(traffic, [seconds] * 3), Counter[str]())

    run(min(6.0, SOAK_SECONDS / 3))  # warm-up: pools, caches, every series
    wait_balanced(service)
    start = snapshot()
    samples = []
    statuses = Counter[str]()
    rounds = 3
    for _ in range(rounds):
        statuses += run(SOAK_SECONDS / rounds)
        wait_balanced(service)
        samples.append(snapshot())
    print(f"soak statuses: {dict(statuses)}; snapshots: {[start, *samples]}")  # pytest -s
    assert set(statuses) == {"200", "404", "422"}, statuses
    end = samples[-1]
    assert end["series"] == start["series"], (start, samples)
    assert end["fds"] <= start["fds"] + 2, (start, samples)
    # threads: the task pool and the server's thread pool start threads lazily, up to their
    # sizes; beyond that, none
    assert end["threads"] <= start["threads"] + 8, (start, samples)
    assert end["threads"] <= samples[-2]["threads"] + 2, (start, samples)
    growth_mb = (end["rss_kb"] - start["rss_kb"]) / 1024
    assert growth_mb < 16, (start, samples)
    # no steady climb either: the last round grows less than a few MB
    assert (end["rss_kb"] - samples[-2]["rss_kb"]) / 1024 < 6, (start, samples)
