"""Faults against a real uvicorn process: a collector that is down, slow or failing, sinks that
can't be written (a directory in the way, a full disk), tasks that raise, hang or block the
event loop, SIGKILL. Each time the runs are accounted for and the service keeps serving."""

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounting import books_from_logs, wait_balanced
from tests.support.fifo import FifoReader, make_fifo
from tests.support.metrics import sample_value
from tests.support.otlp import OtlpReceiver, otlp_env
from tests.support.polling import wait_until
from tests.support.processes import export_children, free_port

# -- tasks that raise, hang, block the loop ----------------------------------------------------


def test_raising_and_hanging_tasks_are_reported(start_faulty_service: Any) -> None:
    """An async task that raises is a failure, one that hangs is cancelled as a timeout; both
    reach error.log and the books balance."""
    service = start_faulty_service(NOTIFY_TASK_TIMEOUT_SECONDS="0.5")
    raised = service.client.post("/faults/raise").json()["task_ids"][0]
    hung = service.client.post("/faults/hang").json()["task_ids"][0]
    books = wait_balanced(service)
    assert books.ledgers["raising_task"].failed == 1
    assert books.ledgers["hanging_task"].timed_out == 1
    assert service.client.get(f"/tasks/{raised}").json()["error_type"] == "ValueError"
    assert service.client.get(f"/tasks/{hung}").json()["state"] == "timed_out"
    errors = (service.data_dir / "error.log").read_text().splitlines()
    assert any(raised in line and "ValueError" in line for line in errors)
    assert any(hung in line and "outcome=timeout" in line for line in errors)


def test_loop_blocking_task_shows_as_lag_and_timeout(start_faulty_service: Any) -> None:
    """An async task that calls time.sleep stalls the loop: event_loop_lag_seconds records it,
    event_loop.stalled is logged, the run past its deadline is a timeout, and the service
    answers again right after."""
    service = start_faulty_service(NOTIFY_TASK_TIMEOUT_SECONDS="0.5")
    lag_over_1s = "event_loop_lag_seconds_bucket"
    before = wait_until(  # the timer runs
        lambda: (t := service.metrics()) and sample_value(t, "event_loop_lag_seconds_count") and t
    )
    assert sample_value(before, "event_loop_lag_seconds_count") == sample_value(
        before, lag_over_1s, le="1.0"
    )
    task_id = service.client.post("/faults/block-loop", params={"seconds": 1.5}).json()["task_ids"][
        0
    ]
    wait_until(lambda: service.events("event_loop.stalled"), timeout=15)
    assert service.client.get("/healthz").status_code == 200
    text = service.metrics()
    stalls = sample_value(text, "event_loop_lag_seconds_count") - sample_value(
        text, lag_over_1s, le="1.0"
    )
    assert stalls >= 1
    assert max(e["lag_seconds"] for e in service.events("event_loop.stalled")) >= 1.0
    record = wait_until(
        lambda: (r := service.client.get(f"/tasks/{task_id}").json())["state"] != "running" and r
    )
    assert record["state"] == "timed_out"  # 1.5 s > the 0.5 s timeout, though never cancelled
    wait_balanced(service)


# -- the OTLP collector misbehaves -------------------------------------------------------------


class MisbehavingCollector:
    """An OTLP/HTTP endpoint that is down (nothing listens), slow (answers after
    ``delay`` seconds), failing (``errors``: 503, retried by the exporter) or broken
    (``broken``: 500, not retried)."""

    def __init__(self, mode: str, delay: float = 3.0) -> None:
        self.mode = mode
        self.requests = 0
        self.server: ThreadingHTTPServer | None = None
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        if mode == "down":
            return
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                collector.requests += 1
                if mode == "slow":
                    time.sleep(delay)
                self.send_response({"errors": 503, "broken": 500}.get(mode, 200))
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _post_burst(url: str, count: int, threads: int = 4) -> list[tuple[int, float]]:
    """``count`` task-adding requests from ``threads`` clients: (status, seconds) each."""

    def worker(n: int) -> list[tuple[int, float]]:
        results = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(n):
                start = time.perf_counter()
                status = client.post(f"/send-notification/user{i}@example.com").status_code
                results.append((status, time.perf_counter() - start))
        return results

    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(worker, [count // threads] * threads)
    return [result for part in parts for result in part]


def test_a_dead_export_helper_is_replaced(start_service: Any, otlp_receiver: OtlpReceiver) -> None:
    """The span export helper killed: logged with its exit status, the next batch starts a new
    one, and the spans of later requests still reach the collector; no batch failed."""
    service = start_service(**otlp_env(otlp_receiver))
    service.client.post("/send-notification/a@example.com")
    wait_until(lambda: otlp_receiver.named("background_task"))
    # the helper has answered for the batch (not only the collector seen it): killed between batches
    wait_until(
        lambda: (
            sample_value(service.metrics(), "tracing_spans_exported_total", outcome="success") == 2
        )
    )
    (helper,) = export_children(service.process.pid)
    os.kill(helper, signal.SIGKILL)
    wait_until(lambda: helper not in export_children(service.process.pid))  # dead, between batches
    service.client.post("/send-notification/b@example.com")
    wait_until(lambda: len(otlp_receiver.named("background_task")) == 2)
    assert export_children(service.process.pid) not in ([], [helper])
    (exited,) = [e for e in service.logs() if e.get("event") == "tracing.export_process_exited"]
    assert exited["returncode"] == -signal.SIGKILL
    text = service.metrics()
    assert sample_value(text, "tracing_spans_exported_total", outcome="failure") == 0
    assert sample_value(text, "tracing_spans_exported_total", outcome="success") == 4


@pytest.mark.parametrize("mode", ["down", "slow", "errors", "broken"])
def test_collector_faults_never_slow_or_break_the_service(start_service: Any, mode: str) -> None:
    """Collector down, slow or answering 503/500: every request still answered quickly, the export
    queue stays within OTEL_BSP_MAX_QUEUE_SIZE, lost spans are counted and logged, and SIGTERM
    still ends the process in bounded time (no unbounded retries)."""
    collector = MisbehavingCollector(mode)
    try:
        service = start_service(
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_BSP_MAX_QUEUE_SIZE="64",
        )
        queued: list[float] = []
        done = threading.Event()

        def watch_queue() -> None:
            while not done.is_set():
                queued.append(service.value("tracing_spans_queued"))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_queue, daemon=True)
        watcher.start()
        results = _post_burst(service.url, 400)
        done.set()
        watcher.join(5)
        assert {status for status, _ in results} == {200}
        latencies = sorted(seconds for _, seconds in results)
        assert latencies[len(latencies) // 2] < 0.25  # the median request: milliseconds
        assert latencies[-1] < 5.0  # never one export timeout (10 s) or retry chain
        assert max(queued) <= 64
        wait_balanced(service)

        def lost(text: str) -> float:
            dropped = sample_value(text, "tracing_spans_dropped_total", reason="queue_full")
            failed = sample_value(text, "tracing_spans_exported_total", outcome="failure")
            # a blocked exporter overflows the queue; a collector refusing at once fails batches
            return dropped if mode != "broken" else failed

        text = wait_until(lambda: (t := service.metrics()) and lost(t) > 0 and t)
        assert sample_value(text, "tracing_spans_exported_total", outcome="success") == 0 or (
            mode == "slow"
        )
        assert mode == "broken" or any(
            line.get("event") == "tracing.spans_dropped" for line in service.logs()
        )
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(60) in (0, -signal.SIGTERM)
        # the drain is instant here; the export gets 5 s, then retries stop (unbounded, the
        # exporter's 10 s timeout and backoff held the exit up for about 19 s)
        assert time.monotonic() - started < 15
    finally:
        collector.close()


# -- sinks that can't be written ---------------------------------------------------------------


def test_unwritable_sinks_fail_runs_visibly(start_service: Any, tmp_path: Path) -> None:
    """log.txt and error.log both directories: runs fail, the failure that error.log can't take
    is still in metrics and logs, other sinks work, the service keeps serving."""
    data_dir = tmp_path / "data"
    (data_dir / "log.txt").mkdir(parents=True)
    (data_dir / "error.log").mkdir()
    service = start_service()
    for _ in range(3):
        assert service.client.post("/send-notification/a@example.com").status_code == 200
    sms = service.client.post("/send-sms", params={"phone": "+15551234567", "msg": "ok"})
    books = wait_balanced(service)
    assert books.ledgers["write_log"].failed == 3
    assert books.ledgers["sms_task"].succeeded == 1
    assert (
        service.value(
            "background_task_failures_total",
            task="write_log",
            backend="inprocess",
            exception="IsADirectoryError",
        )
        == 3
    )
    sink_errors = service.events("task.failure_sink_error")
    assert len(sink_errors) == 3 and all(
        e["error_type"] == "IsADirectoryError" for e in sink_errors
    )
    assert sms.status_code == 200 and (data_dir / "sms_log.txt").exists()
    assert service.client.get("/healthz").status_code == 200


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs filled to the last byte (needs root and mount rights; skipped without)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * 4096):
                    pass
        finally:
            os.close(fd)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_fails_runs_visibly_and_recovers(start_service: Any, full_disk: Path) -> None:
    """Disk full (ENOSPC on a tiny tmpfs): runs fail with OSError, error.log can't be written
    either yet the failures are in metrics and logs; once space is back, runs succeed."""
    probe = full_disk / "probe"
    with pytest.raises(OSError) as raised, probe.open("wb") as handle:
        handle.write(b"x" * 8192)
        handle.flush()
        os.fsync(handle.fileno())
    assert raised.value.errno == errno.ENOSPC
    probe.unlink(missing_ok=True)
    service = start_service(NOTIFY_DATA_DIR=str(full_disk))
    for _ in range(3):
        assert (
            service.client.post("/send-sms", params={"phone": "+15551234567", "msg": "x" * 900})
        ).status_code == 200
    books = wait_balanced(service)
    assert books.ledgers["sms_task"].failed == 3
    assert (
        service.value(
            "background_task_failures_total",
            task="sms_task",
            backend="inprocess",
            exception="OSError",
        )
        == 3
    )
    failed = service.events("task.failed")
    assert all("No space left" in line["error"] for line in failed)
    assert len(service.events("task.failure_sink_error")) == 3
    assert service.client.get("/healthz").status_code == 200
    (full_disk / "filler").unlink()
    service.client.post("/send-sms", params={"phone": "+15551234567", "msg": "after"})
    books = wait_balanced(service)
    assert books.ledgers["sms_task"].succeeded == 1
    assert (full_disk / "sms_log.txt").read_text().splitlines()[-1] == "+15551234567:after"


# -- SIGKILL -----------------------------------------------------------------------------------


def test_sigkill_loses_pending_inprocess_tasks_visibly(start_service: Any, tmp_path: Path) -> None:
    """SIGKILL loses what was pending in-process (documented); with the lifecycle events on,
    every lost task is visible in the logs as enqueued without an outcome."""
    fifo = make_fifo(tmp_path / "data")  # the first run blocks; the rest wait
    service = start_service(NOTIFY_TASK_CONCURRENCY="1", NOTIFY_LOG_TASK_LIFECYCLE="true")
    accepted = [service.client.post("/safe-notify").json()["task_ids"][0] for _ in range(5)]
    wait_until(lambda: service.events("task.started"))
    service.process.send_signal(signal.SIGKILL)
    assert service.process.wait(10) == -signal.SIGKILL
    FifoReader(fifo, seconds=0.5)
    books = books_from_logs(service.logs())
    ledger = books.ledgers["safe_write_log"]
    assert ledger.enqueued == 5 and ledger.ended == 0
    enqueued = {e["task_id"] for e in service.events("task.enqueued")}
    assert enqueued == set(accepted)
