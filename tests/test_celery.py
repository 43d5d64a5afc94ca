"""The Celery backend end to end: real Redis broker, real worker process, real API process,
spans collected by a real OTLP/HTTP receiver."""

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.fifo import FifoReader
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, WorkerProcess, free_port


@pytest.fixture
def stack(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,
) -> tuple[ServiceProcess, WorkerProcess]:
    env = {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_TIMEOUT_SECONDS": "1",
        "NOTIFY_TASK_CONCURRENCY": "2",
    }
    worker = start_worker(**env, **otlp_env(otlp_receiver))
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env, **otlp_env(otlp_receiver))
    return api, worker


def record_in(api: ServiceProcess, task_id: str, state: str) -> dict[str, Any] | None:
    """GET /tasks/{task_id} once it reports ``state``."""
    record: dict[str, Any] = api.client.get(f"/tasks/{task_id}").json()
    return record if record.get("state") == state else None


def failures(worker: WorkerProcess, task: str, exception: str) -> float:
    return worker.value(
        "background_task_failures_total", task=task, backend="celery", exception=exception
    )


def finished(worker: WorkerProcess, task: str, outcome: str) -> float:
    return worker.value(
        "background_task_finished_total", task=task, backend="celery", outcome=outcome
    )


def test_worker_runs_tasks_and_continues_the_request_trace(
    stack: tuple[ServiceProcess, WorkerProcess], otlp_receiver: OtlpReceiver, broker_url: str
) -> None:
    """Tasks published by the API run on the worker; its span continues the request's trace.
    The publish span is PRODUCER ``publish celery``, the run's CONSUMER ``process celery``, both
    with the messaging conventions' attributes; the run's keeps its ``background_task.*``."""
    api, worker = stack
    assert api.client.get("/readyz").status_code == 200
    task_id = api.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    api.client.post("/send-sms", params={"phone": "+8613812345678", "msg": "hi"})
    wait_until(lambda: finished(worker, "write_log", "success") == 1)
    wait_until(lambda: finished(worker, "sms_task", "success") == 1)
    assert (api.data_dir / "log.txt").read_text() == "message to a@example.com\n"
    assert (api.data_dir / "sms_log.txt").read_text() == "+8613812345678:hi\n"
    assert api.value("background_task_enqueued_total", task="write_log", backend="celery") == 1
    assert worker.value("background_task_capacity", backend="celery") == 2
    task_span = run_span(otlp_receiver, task_id)
    server = wait_until(lambda: otlp_receiver.named("POST /send-notification"))[0]
    publish = published_span(otlp_receiver, task_id)
    assert task_span.trace_id == publish.trace_id == server.trace_id
    assert task_span.parent_span_id == publish.span_id  # request -> publish -> run
    assert publish.parent_span_id == server.span_id
    assert publish.kind == Span.SpanKind.SPAN_KIND_PRODUCER
    assert task_span.kind == Span.SpanKind.SPAN_KIND_CONSUMER
    attributes = span_attributes(task_span)
    assert attributes["background_task.backend"] == "celery"
    assert attributes["background_task.id"] == task_id
    assert attributes["background_task.name"] == "write_log"
    assert attributes["background_task.outcome"] == "success"
    broker = urlsplit(broker_url)
    messaging = {
        "messaging.system": "celery",
        "messaging.destination.name": "celery",
        "messaging.message.id": task_id,
        "server.address": broker.hostname,
        "server.port": broker.port,
    }
    assert task_span.name == "process celery"
    assert attributes | messaging == attributes
    assert attributes["messaging.operation.name"] == "process"
    assert attributes["messaging.operation.type"] == "process"
    published = span_attributes(publish)
    assert publish.name == "publish celery"
    assert published | messaging == published
    assert published["messaging.operation.name"] == "publish"
    assert published["messaging.operation.type"] == "send"
    assert "error.type" not in attributes and "error.type" not in published
    ended = [e for e in worker.logs() if e.get("event") == "task.succeeded"]
    ended = [e for e in ended if e["task"] == "write_log"]  # children run concurrently
    assert ended[0]["trace_id"] == task_span.trace_id.hex()
    # Celery's own per-task lines would only repeat the runner's terminal event
    celery_lines = [e["event"] for e in worker.logs() if e.get("logger", "").startswith("celery")]
    assert not [line for line in celery_lines if " received" in line or " succeeded in " in line]
    record = wait_until(lambda: record_in(api, task_id, "succeeded"))
    assert record["name"] == "write_log" and record["backend"] == "celery"
    assert record["enqueued_at"] <= record["started_at"] <= record["finished_at"]


def run_span(receiver: OtlpReceiver, task_id: str) -> Span:
    """The worker's CONSUMER span of the run of ``task_id``."""
    return wait_until(
        lambda: [
            span
            for span in receiver.named("process celery")
            if span_attributes(span)["background_task.id"] == task_id
        ]
    )[0]


def published_span(receiver: OtlpReceiver, task_id: str) -> Span:
    """The API's PRODUCER span that published ``task_id``."""
    return wait_until(
        lambda: [
            span
            for span in receiver.named("publish celery")
            if span_attributes(span)["background_task.id"] == task_id
        ]
    )[0]


def test_link_mode_roots_the_run_in_a_trace_linked_to_the_request(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,
) -> None:
    """NOTIFY_CELERY_TRACE_MODE=link: the run's span starts a trace of its own, linked."""
    env = {"NOTIFY_DATA_DIR": str(tmp_path / "data"), "NOTIFY_BROKER_URL": broker_url}
    worker = start_worker(
        **env,
        NOTIFY_CELERY_TRACE_MODE="link",
        NOTIFY_TASK_CONCURRENCY="1",
        **otlp_env(otlp_receiver),
    )
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env, **otlp_env(otlp_receiver))
    task_id = api.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    wait_until(lambda: finished(worker, "write_log", "success") == 1)
    run = wait_until(lambda: otlp_receiver.named("process celery"))
    publish = published_span(otlp_receiver, task_id)
    assert len(run) == 1
    assert run[0].trace_id != publish.trace_id and not run[0].parent_span_id
    assert [(link.trace_id, link.span_id) for link in run[0].links] == [
        (publish.trace_id, publish.span_id)
    ]


def test_worker_failure_and_timeout_are_reported(
    stack: tuple[ServiceProcess, WorkerProcess], otlp_receiver: OtlpReceiver
) -> None:
    """On the worker a failing run counts by exception; a run over the limit is a timeout;
    their spans carry the exception's class name as ``error.type``."""
    api, worker = stack
    (api.data_dir / "log.txt").mkdir()
    failed_id = api.client.post("/safe-notify").json()["task_ids"][0]
    wait_until(lambda: finished(worker, "safe_write_log", "failure") == 1)
    record = wait_until(lambda: record_in(api, failed_id, "failed"))
    assert record["error_type"] == "IsADirectoryError"
    assert failures(worker, "safe_write_log", "IsADirectoryError") == 1
    assert "IsADirectoryError" in (api.data_dir / "error.log").read_text()
    (api.data_dir / "log.txt").rmdir()
    os.mkfifo(api.data_dir / "log.txt")  # opening it blocks past the 1 s task timeout
    slow_id = api.client.post("/safe-notify").json()["task_ids"][0]
    wait_until(lambda: finished(worker, "safe_write_log", "timeout") == 1)
    wait_until(lambda: record_in(api, slow_id, "timed_out"))
    timed_out = [e for e in worker.logs() if e.get("event") == "task.timed_out"]
    assert timed_out[0]["error_type"] == "TaskTimeout"
    # prefork: Celery's soft time limit interrupted the body, nothing overran
    assert not [e for e in worker.logs() if e.get("event") == "task.overran"]
    assert f"id={slow_id} outcome=timeout" in (api.data_dir / "error.log").read_text()
    assert worker.value("background_task_in_progress", task="safe_write_log", backend="celery") == 0
    failed = span_attributes(run_span(otlp_receiver, failed_id))
    slow = span_attributes(run_span(otlp_receiver, slow_id))
    assert (failed["error.type"], slow["error.type"]) == ("IsADirectoryError", "TaskTimeout")


def test_queue_depth_and_oldest_pending_come_from_the_broker(
    start_service: Any, broker_url: str, tmp_path: Path
) -> None:
    """With no worker, published tasks wait in Redis: the API reports depth and oldest age."""
    api = start_service(NOTIFY_TASK_BACKEND="celery", NOTIFY_BROKER_URL=broker_url)
    for _ in range(3):
        assert api.client.post("/safe-notify").status_code == 200
    labels = {"backend": "celery", "queue": "celery"}
    wait_until(lambda: api.value("background_task_queue_depth", **labels) == 3, timeout=10)
    oldest = api.value("background_task_oldest_pending_timestamp_seconds", **labels)
    assert oldest > 0


def test_unreachable_broker_is_503_enqueue_error(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """With the broker down, requests get 503 (reason enqueue_error), counted; not ready; the
    publish span is ERROR with the exception's class name as ``error.type``."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = start_service(
        NOTIFY_TASK_BACKEND="celery",
        NOTIFY_BROKER_URL=f"redis://127.0.0.1:{port}/0",
        **otlp_env(otlp_receiver),
    )
    response = api.client.post("/send-notification/a@example.com")
    assert response.status_code == 503
    assert response.json()["reason"] == "enqueue_error"
    assert (
        api.value(
            "background_task_dropped_total",
            task="write_log",
            backend="celery",
            reason="enqueue_error",
        )
        == 1
    )
    wait_until(lambda: api.client.get("/readyz").status_code == 503)
    [publish] = wait_until(lambda: otlp_receiver.named("publish celery"))
    assert publish.status.code == publish.status.STATUS_CODE_ERROR
    error_type = span_attributes(publish)["error.type"]
    assert error_type.isidentifier() and str(port) not in error_type
    assert span_attributes(publish)["server.port"] == port


def test_failed_runs_are_retried_then_fail(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """With NOTIFY_TASK_MAX_RETRIES=2 a task failing transiently runs 3 times: retry, retry,
    failure (the SMS provider's port is closed: connection refused each time)."""
    env = {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_MAX_RETRIES": "2",
        "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "0.05",
        "NOTIFY_SMS_CHANNEL": "http",
        "NOTIFY_SMS_HTTP_URL": f"http://127.0.0.1:{free_port()}/sms",
    }
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    params = {"phone": "+8613812345678", "msg": "hello"}
    task_id = api.client.post("/send-sms", params=params).json()["task_ids"][0]
    wait_until(lambda: finished(worker, "sms_task", "failure") == 1, timeout=20)
    assert finished(worker, "sms_task", "retry") == 2
    assert failures(worker, "sms_task", "ConnectionFailed") == 3
    errors = (api.data_dir / "error.log").read_text().splitlines()
    assert [line.rsplit("outcome=", 1)[1] for line in errors] == ["retry)", "retry)", "failure)"]
    assert all(task_id in line for line in errors)
    assert not (api.data_dir / "sms_log.txt").exists()  # the line is written once delivered
    wait_until(lambda: record_in(api, task_id, "failed"))


def test_threads_pool_reports_a_timeout_at_the_deadline(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """NOTIFY_WORKER_POOL=threads: a stuck run is reported timeout, its body finishes later."""
    env = {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_TIMEOUT_SECONDS": "1",
        "NOTIFY_WORKER_POOL": "threads",
    }
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    os.mkfifo(api.data_dir / "log.txt")
    slow_id = api.client.post("/safe-notify").json()["task_ids"][0]
    wait_until(lambda: finished(worker, "safe_write_log", "timeout") == 1)
    wait_until(lambda: record_in(api, slow_id, "timed_out"))
    reader = FifoReader(api.data_dir / "log.txt")  # lets the body finish
    try:
        wait_until(lambda: reader.read())
    finally:
        reader.stop()
    wait_until(lambda: [e for e in worker.logs() if e.get("event") == "task.overran"])
    assert finished(worker, "safe_write_log", "success") == 0
