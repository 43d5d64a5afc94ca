"""Metrics, spans and logs of task runs, against a real uvicorn process and a real OTLP/HTTP
receiver. Slow and failing tasks come from the sinks themselves: ``log.txt`` made a FIFO (its
open blocks until a reader comes) or a directory (its open fails)."""

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.accounting import books_from_logs
from tests.conftest import (
    OtlpReceiver,
    ServiceProcess,
    otlp_env,
    sample_value,
    span_attributes,
    wait_until,
)

EMAIL = "alice.secret@example.com"
PHONE = "+8613812345678"
TASKS = ("write_log", "sms_task", "safe_write_log")


def make_fifo(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    fifo = data_dir / "log.txt"
    os.mkfifo(fifo)
    return fifo


class FifoReader(threading.Thread):
    """Holds the FIFO open for reading (so writers' opens stop blocking) and collects what is
    written for ``seconds``."""

    def __init__(self, fifo: Path, seconds: float = 20.0) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.deadline = time.monotonic() + seconds
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if not self._read():
                    time.sleep(0.01)
            while self._read():  # what is still in the pipe
                pass
        finally:
            os.close(self.fd)

    def _read(self) -> bool:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:  # a writer, no data yet
            return False
        self.data += chunk
        return bool(chunk)

    def stop(self) -> list[str]:
        """Stop reading (once the pipe is empty) and return the lines read."""
        self.deadline = 0
        self.join(10)
        assert not self.is_alive()
        return self.lines()

    def lines(self) -> list[str]:
        return self.data.decode().splitlines()


def events(service: ServiceProcess, name: str) -> list[dict[str, Any]]:
    return [line for line in service.logs() if line.get("event") == name]


def test_known_task_series_exist_at_zero(start_service: Any) -> None:
    """Right after start-up every known task has its series, at zero."""
    text = start_service().metrics()
    for task in TASKS:
        for name in ("background_task_enqueued_total", "background_task_started_total"):
            assert f'{name}{{backend="inprocess",task="{task}"}} 0.0' in text
        for outcome in ("success", "failure", "timeout"):
            assert re.search(
                rf'background_task_finished_total\{{[^}}]*outcome="{outcome}"'
                rf'[^}}]*task="{task}"\}} 0\.0',
                text,
            )
    assert 'background_task_capacity{backend="inprocess"} 8.0' in text
    assert 'background_task_queue_depth{backend="inprocess",queue="default"} 0.0' in text


def test_success_moves_counters_histograms_and_timestamps(start_service: Any) -> None:
    """A successful run counts enqueued/started/finished, observes wait and duration."""
    service = start_service()
    for _ in range(3):
        service.client.post("/send-notification/a@example.com")
    labels = {"task": "write_log", "backend": "inprocess"}
    wait_until(
        lambda: service.value("background_task_finished_total", outcome="success", **labels) == 3
    )
    text = service.metrics()
    assert sample_value(text, "background_task_enqueued_total", **labels) == 3
    assert sample_value(text, "background_task_started_total", **labels) == 3
    assert sample_value(text, "background_task_queue_wait_seconds_count", **labels) == 3
    assert (
        sample_value(text, "background_task_duration_seconds_count", outcome="success", **labels)
        == 3
    )
    assert sample_value(text, "background_task_in_progress", **labels) == 0
    started = sample_value(text, "background_task_last_started_timestamp_seconds", **labels)
    finished = sample_value(
        text, "background_task_last_finished_timestamp_seconds", outcome="success", **labels
    )
    assert 0 < started <= finished


def test_failure_counts_exception_writes_error_log_and_span(
    start_service: Any, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A failing run: failure counters by exception, error.log line, ERROR span with event."""
    data_dir = tmp_path / "data"
    (data_dir / "log.txt").mkdir(parents=True)  # opening it for writing fails
    service = start_service(**otlp_env(otlp_receiver))
    body = service.client.post("/send-notification/a@example.com").json()
    sms = service.client.post("/send-sms", params={"phone": PHONE, "msg": "ok"}).json()
    labels = {"task": "write_log", "backend": "inprocess"}
    wait_until(
        lambda: service.value("background_task_finished_total", outcome="failure", **labels) == 1
    )
    text = service.metrics()
    assert (
        sample_value(
            text, "background_task_failures_total", exception="IsADirectoryError", **labels
        )
        == 1
    )
    assert (
        sample_value(text, "background_task_duration_seconds_count", outcome="failure", **labels)
        == 1
    )
    record = service.client.get(f"/tasks/{body['task_ids'][0]}").json()
    assert record["state"] == "failed" and record["error_type"] == "IsADirectoryError"
    errors = (data_dir / "error.log").read_text().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("Log Error: IsADirectoryError: ")
    assert body["task_ids"][0] in errors[0]
    # the other task was not affected
    wait_until(lambda: (data_dir / "sms_log.txt").exists())
    assert service.client.get(f"/tasks/{sms['task_ids'][0]}").json()["state"] == "succeeded"
    span = wait_until(lambda: [s for s in otlp_receiver.named("background_task write_log")])[0]
    assert span.status.code == 2  # STATUS_CODE_ERROR
    assert span_attributes(span)["background_task.outcome"] == "failure"
    assert [event.name for event in span.events] == ["exception"]
    failed = events(service, "task.failed")
    assert failed[0]["error_type"] == "IsADirectoryError"
    assert failed[0]["task_id"] == body["task_ids"][0]


def test_timeout_reports_timeout_outcome(start_service: Any, tmp_path: Path) -> None:
    """A sync run over NOTIFY_TASK_TIMEOUT_SECONDS is reported as timeout at the deadline."""
    fifo = make_fifo(tmp_path / "data")
    service = start_service(NOTIFY_TASK_TIMEOUT_SECONDS="0.3")
    task_id = service.client.post("/safe-notify").json()["task_ids"][0]
    labels = {"task": "safe_write_log", "backend": "inprocess"}
    wait_until(
        lambda: service.value("background_task_finished_total", outcome="timeout", **labels) == 1
    )
    record = service.client.get(f"/tasks/{task_id}").json()
    assert record["state"] == "timed_out"
    assert record["duration_seconds"] >= 0.29  # reported at the deadline, not before
    timed_out = events(service, "task.timed_out")
    assert timed_out[0]["task_id"] == task_id and timed_out[0]["error_type"] == "TimeoutError"
    assert "timeout" in (tmp_path / "data" / "error.log").read_text()
    FifoReader(fifo, seconds=1)
    wait_until(lambda: events(service, "task.overran"))


def test_backlog_full_is_503_and_counted(start_service: Any, tmp_path: Path) -> None:
    """With the backlog full a request is refused with 503 + Retry-After, and counted."""
    fifo = make_fifo(tmp_path / "data")
    service = start_service(NOTIFY_TASK_CONCURRENCY="1", NOTIFY_TASK_BACKLOG="2")
    first = service.client.post("/send-notification/a@example.com")
    assert first.status_code == 200
    # the first run has left the backlog (it blocks on the FIFO) before the next two fill it
    running = first.json()["task_ids"][0]
    wait_until(lambda: service.client.get(f"/tasks/{running}").json()["state"] == "running")
    accepted = [service.client.post("/send-notification/a@example.com") for _ in range(2)]
    assert [r.status_code for r in accepted] == [200, 200]  # 1 running + 2 waiting
    refused = service.client.post("/advanced-notification/a@example.com", params={"q": "x"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["reason"] == "backlog_full"
    text = service.metrics()
    assert (
        sample_value(
            text,
            "background_task_dropped_total",
            task="write_log",
            backend="inprocess",
            reason="backlog_full",
        )
        == 2
    )
    assert (
        sample_value(text, "background_task_queue_depth", backend="inprocess", queue="default") == 2
    )
    assert (
        sample_value(
            text,
            "background_task_oldest_pending_timestamp_seconds",
            backend="inprocess",
            queue="default",
        )
        > 0
    )
    for task_id in refused.json()["task_ids"]:
        assert service.client.get(f"/tasks/{task_id}").json()["state"] == "dropped"
    assert len(events(service, "task.dropped")) == 2
    FifoReader(fifo)
    wait_until(
        lambda: (
            service.value(
                "background_task_finished_total",
                task="write_log",
                backend="inprocess",
                outcome="success",
            )
            == 3
        )
    )
    assert service.value("background_task_queue_depth", backend="inprocess", queue="default") == 0


def test_task_span_is_child_of_request_span_and_logs_carry_trace(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """The task span's parent is the request's server span; task logs carry its trace id."""
    service = start_service(**otlp_env(otlp_receiver))
    task_id = service.client.post(f"/send-notification/{EMAIL}").json()["task_ids"][0]
    task_span = wait_until(lambda: otlp_receiver.named("background_task write_log"))[0]
    server = wait_until(lambda: [s for s in otlp_receiver.named("POST /send-notification")])[0]
    assert task_span.trace_id == server.trace_id
    assert task_span.parent_span_id == server.span_id
    attributes = span_attributes(task_span)
    assert attributes["background_task.name"] == "write_log"
    assert attributes["background_task.id"] == task_id
    assert attributes["background_task.backend"] == "inprocess"
    assert attributes["background_task.outcome"] == "success"
    assert attributes["background_task.queue_wait_seconds"] >= 0
    assert task_span.start_time_unix_nano >= server.start_time_unix_nano
    trace_id = task_span.trace_id.hex()
    succeeded = [e for e in events(service, "task.succeeded") if e["task_id"] == task_id]
    assert succeeded[0]["trace_id"] == trace_id
    assert succeeded[0]["span_id"] == task_span.span_id.hex()
    for field in (
        "started_at",
        "finished_at",
        "duration_seconds",
        "queue_wait_seconds",
        "backend",
        "task",
    ):
        assert field in succeeded[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", succeeded[0]["timestamp"])
    assert len(otlp_receiver.named("background_task")) == 1  # exactly one span per run


def test_lifecycle_events_are_debug_unless_turned_on(start_service: Any) -> None:
    """By default a run logs one line, its terminal event, carrying every timestamp of the run;
    task.enqueued and task.started come with NOTIFY_LOG_TASK_LIFECYCLE (at INFO) or at DEBUG."""
    quiet, lifecycle, debug = (
        start_service(),
        start_service(NOTIFY_LOG_TASK_LIFECYCLE="true"),
        start_service(NOTIFY_LOG_LEVEL="DEBUG"),
    )
    for service in (quiet, lifecycle, debug):
        task_id = service.client.post("/send-notification/a@example.com").json()["task_ids"][0]
        wait_until(lambda s=service: events(s, "task.succeeded"))
        (ended,) = events(service, "task.succeeded")
        assert ended["task_id"] == task_id and ended["level"] == "info"
        for field in ("started_at", "finished_at", "duration_seconds", "queue_wait_seconds"):
            assert field in ended
    assert not events(quiet, "task.enqueued") and not events(quiet, "task.started")
    for service, level in ((lifecycle, "info"), (debug, "debug")):
        (enqueued,) = events(service, "task.enqueued")
        (started,) = events(service, "task.started")
        (ended,) = events(service, "task.succeeded")
        assert enqueued["level"] == started["level"] == level
        assert enqueued["task_id"] == started["task_id"] == ended["task_id"]
        assert started["trace_id"] == ended["trace_id"] and "enqueued_at" in enqueued


def test_openmetrics_serves_trace_exemplars(start_service: Any) -> None:
    """Asked for OpenMetrics, /metrics serves trace_id exemplars on the duration histograms."""
    service = start_service()
    service.client.post("/safe-notify")
    wait_until(
        lambda: (
            service.value(
                "background_task_finished_total",
                task="safe_write_log",
                backend="inprocess",
                outcome="success",
            )
            == 1
        )
    )
    text = service.metrics(openmetrics=True)
    assert re.search(
        r'background_task_duration_seconds_bucket\{[^}]*task="safe_write_log"'
        r'[^}]*\} 1\.0 # \{trace_id="[0-9a-f]{32}"\}',
        text,
    )
    assert re.search(
        r'http_server_request_duration_seconds_bucket\{[^}]*route="/safe-notify"'
        r'[^}]*\} 1\.0 # \{trace_id="[0-9a-f]{32}"\}',
        text,
    )
    assert "# {" not in service.metrics()  # plain text format has no exemplars


def test_http_metrics_use_route_template_and_exclude_probes(start_service: Any) -> None:
    """HTTP metrics label the route template (never the raw path) and skip probe paths."""
    service = start_service()
    service.client.post(f"/send-notification/{EMAIL}")
    service.client.post("/send-notification/bad")
    service.client.get("/nope/abc")
    service.client.get("/healthz")
    text = service.metrics()
    labels = {"method": "POST", "route": "/send-notification/{email}"}
    assert (
        sample_value(
            text, "http_server_request_duration_seconds_count", status_code="200", **labels
        )
        == 1
    )
    assert (
        sample_value(
            text, "http_server_request_duration_seconds_count", status_code="422", **labels
        )
        == 1
    )
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="<unmatched>",
            status_code="404",
        )
        == 1
    )
    assert 'route="/healthz"' not in text
    assert sample_value(text, "http_server_active_requests", method="POST") == 0


def test_no_personal_data_in_metrics_spans_or_logs(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """E-mail addresses and phone numbers never reach /metrics, span data or logs."""
    service = start_service(**otlp_env(otlp_receiver), NOTIFY_ACCESS_LOG="true")
    service.client.post(f"/send-notification/{EMAIL}")
    service.client.post(f"/advanced-notification/{EMAIL}", params={"q": f"call {PHONE}"})
    service.client.post("/send-sms", params={"phone": PHONE, "msg": f"mail {EMAIL}"})
    service.client.post("/send-notification/bad@")
    wait_until(lambda: len(otlp_receiver.named("background_task")) == 4)
    wait_until(lambda: len(otlp_receiver.named("POST")) >= 4)
    secrets = (EMAIL, "alice.secret", PHONE, PHONE[1:], "13812345678", "alice.secret%40")
    output = service.raw_output()
    metrics = service.metrics() + service.metrics(openmetrics=True)
    spans = repr(
        [(s.name, span_attributes(s), [e.name for e in s.events]) for _, s in otlp_receiver.spans]
    )
    for secret in secrets:
        assert secret not in output
        assert secret not in metrics
        assert secret not in spans
    # masked in the access log, not just absent (uvicorn < 0.55 logs the path percent-encoded)
    assert "a***@example.com" in output or "a***%40example.com" in output
    assert "phone=***&msg=***" in output  # query values (phone, message text) are redacted


def test_sigterm_drains_backlog_and_accounts_every_task(start_service: Any, tmp_path: Path) -> None:
    """SIGTERM during a burst: while the backlog drains, HTTP is still served, readyz is 503 and
    new tasks are refused; every accepted task runs and writes its line, then the process
    exits."""
    fifo = make_fifo(tmp_path / "data")  # the first run blocks until the reader comes
    service = start_service(
        NOTIFY_TASK_CONCURRENCY="1",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="120",
        NOTIFY_LOG_TASK_LIFECYCLE="true",  # the invariant from the logs alone
    )
    accepted: list[str] = []
    refused = 0
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for _ in range(1000):
            accepted += client.post(
                "/advanced-notification/a@example.com", params={"q": "x"}
            ).json()["task_ids"]
        service.process.send_signal(signal.SIGTERM)
        wait_until(lambda: events(service, "shutdown.draining"))
        for _ in range(5):  # the drain can't end yet: the first run still blocks
            response = client.post("/safe-notify")
            assert response.status_code == 503
            assert response.json()["reason"] == "shutdown"
            assert client.get("/readyz").status_code == 503
            refused += 1
        reader = FifoReader(fifo, seconds=120)  # now the backlog drains
        for _ in range(100_000):  # until the server stops listening, once the drain is done
            try:
                response = client.post("/safe-notify")
            except httpx.TransportError:
                break
            assert response.status_code == 503
            refused += 1
    assert service.process.wait(60) in (0, -signal.SIGTERM)
    written = reader.stop()
    logs = service.logs()
    outcome_of = {line["task_id"]: line["event"] for line in logs if "task_id" in line}
    assert {outcome_of[t] for t in accepted} == {"task.succeeded"}
    assert len(accepted) == 2000 and len(written) == len(accepted)
    books = books_from_logs(logs)  # the invariant, from the logs of the whole run
    assert not books.unbalanced(), books
    assert sum(ledger.enqueued for ledger in books.ledgers.values()) == len(accepted)
    # the request in flight as the server closed may have been handled without an answer
    refused_while_draining = sum(ledger.refused["shutdown"] for ledger in books.ledgers.values())
    assert refused <= refused_while_draining <= refused + 1
    assert any(line.get("event") == "shutdown.drained" for line in logs)


def test_grace_period_end_drops_what_never_ran(start_service: Any, tmp_path: Path) -> None:
    """When the grace period ends before the backlog has drained, the run under way is reported
    failed, every task that never ran is counted and logged as dropped (reason shutdown, with
    its id and name), and the process exits."""
    make_fifo(tmp_path / "data")  # no reader ever comes: the first run blocks for good
    service = start_service(
        NOTIFY_TASK_CONCURRENCY="1",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="0.3",
        NOTIFY_LOG_TASK_LIFECYCLE="true",  # the invariant from the logs alone
    )
    accepted: list[str] = []
    for _ in range(50):
        accepted += service.client.post(
            "/advanced-notification/a@example.com", params={"q": "x"}
        ).json()["task_ids"]
    running = accepted[0]
    wait_until(lambda: service.client.get(f"/tasks/{running}").json()["state"] == "running")
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) in (0, -signal.SIGTERM)
    logs = service.logs()
    ended = {line["task_id"]: line for line in logs if line.get("event", "").startswith("task.")}
    assert ended[running]["event"] == "task.failed"
    dropped = [ended[t] for t in accepted[1:]]
    assert all(line["event"] == "task.dropped" for line in dropped)
    assert all(line["reason"] == "shutdown" and line["accepted"] for line in dropped)
    assert {line["task"] for line in dropped} == {"write_log"}
    books = books_from_logs(logs)
    assert not books.unbalanced(), books
    assert any(line.get("event") == "backend.drain_timeout" for line in logs)


def test_slow_task_never_holds_the_response(start_service: Any, tmp_path: Path) -> None:
    """The response and its latency sample are done while the task is still running."""
    fifo = make_fifo(tmp_path / "data")  # the task blocks until a reader comes
    service = start_service()
    response = service.client.post("/safe-notify")
    assert response.status_code == 200
    task_id = response.json()["task_ids"][0]
    wait_until(lambda: service.client.get(f"/tasks/{task_id}").json()["state"] == "running")
    text = service.metrics()
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="POST",
            route="/safe-notify",
            status_code="200",
        )
        == 1
    )
    assert sample_value(text, "http_server_active_requests", method="POST") == 0
    assert (
        sample_value(
            text, "background_task_in_progress", task="safe_write_log", backend="inprocess"
        )
        == 1
    )
    FifoReader(fifo, seconds=2)
    wait_until(lambda: service.client.get(f"/tasks/{task_id}").json()["state"] == "succeeded")


def test_second_sigterm_stops_waiting_for_the_drain(start_service: Any, tmp_path: Path) -> None:
    """A second SIGTERM ends the drain early; tasks that never ran are still counted."""
    fifo = make_fifo(tmp_path / "data")  # the first run blocks: the backlog can't drain
    service = start_service(NOTIFY_TASK_CONCURRENCY="1", NOTIFY_SHUTDOWN_GRACE_SECONDS="120")
    ids = [service.client.post("/safe-notify").json()["task_ids"][0] for _ in range(3)]
    service.process.send_signal(signal.SIGTERM)
    wait_until(lambda: service.client.get("/readyz").status_code == 503)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) in (0, -signal.SIGTERM)  # far less than the 120 s grace
    FifoReader(fifo, seconds=1)
    dropped = {e["task_id"] for e in events(service, "task.dropped")}
    assert set(ids[1:]) <= dropped


def test_unknown_http_methods_share_one_label(start_service: Any) -> None:
    """Arbitrary request methods can't mint new series: they are labelled _OTHER."""
    service = start_service()
    for method in ("PURGE", "MKCOL", "PROPFIND"):  # methods both h11 and httptools pass on
        assert service.client.request(method, "/safe-notify").status_code == 405
    text = service.metrics()
    assert 'method="PURGE"' not in text and 'method="MKCOL"' not in text
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="_OTHER",
            route="/safe-notify",
            status_code="405",
        )
        == 3
    )
