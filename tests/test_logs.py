"""Log formats and tracing configuration seen from the outside of a real process."""

import json
from typing import Any

from tests.support.otlp import otlp_env
from tests.support.polling import wait_until


def test_console_format_is_human_readable(start_service: Any) -> None:
    """NOTIFY_LOG_FORMAT=console writes key=value lines, not JSON, still masked."""
    service = start_service(NOTIFY_LOG_FORMAT="console", NOTIFY_ACCESS_LOG="true")
    service.client.post("/send-notification/bob@example.com")
    wait_until(lambda: "task.succeeded" in service.raw_output())
    output = service.raw_output()
    line = next(line for line in output.splitlines() if "task.succeeded" in line)
    assert "task=write_log" in line and "duration_seconds=" in line
    assert not line.startswith("{")
    assert "bob@example.com" not in output and "b***" in output


def test_without_exporter_logs_still_carry_trace_ids(start_service: Any) -> None:
    """With no OTLP endpoint spans are still created: task logs have trace and span ids."""
    service = start_service()
    service.client.post("/safe-notify")
    wait_until(lambda: any(e.get("event") == "task.succeeded" for e in service.logs()))
    (line,) = [e for e in service.logs() if e.get("event") == "task.succeeded"]
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16


def test_sdk_disabled_creates_no_spans(start_service: Any) -> None:
    """OTEL_SDK_DISABLED=true: no spans, so no trace ids in logs and no exemplars."""
    service = start_service(OTEL_SDK_DISABLED="true")
    service.client.post("/safe-notify")
    wait_until(lambda: any(e.get("event") == "task.succeeded" for e in service.logs()))
    assert all("trace_id" not in e for e in service.logs())
    assert "trace_id" not in service.metrics(openmetrics=True)


def test_every_line_is_json_with_the_base_fields(start_service: Any) -> None:
    """Every stdout line (uvicorn's own lines and the access log included) is JSON with base
    fields."""
    service = start_service(NOTIFY_ACCESS_LOG="true")
    service.client.post("/send-notification/not-an-email")
    service.client.post("/safe-notify")
    wait_until(lambda: any(e.get("event") == "task.succeeded" for e in service.logs()))
    lines = service.raw_output().splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"timestamp", "level", "event"} <= set(record)
        assert record["timestamp"].endswith("Z")
    loggers = {json.loads(line).get("logger") for line in lines}
    assert {"uvicorn.error", "observability.http", "observability.runner"} <= loggers


def test_access_log_is_off_by_default(start_service: Any) -> None:
    """Without NOTIFY_ACCESS_LOG no http.request line repeats what the request metric says."""
    service = start_service()
    service.client.post("/safe-notify")
    wait_until(lambda: any(e.get("event") == "task.succeeded" for e in service.logs()))
    assert "uvicorn.error" in {e.get("logger") for e in service.logs()}
    assert not service.events("http.request")


def test_sampler_from_environment_is_honoured(start_service: Any, otlp_receiver: Any) -> None:
    """OTEL_TRACES_SAMPLER=always_off: nothing exported, no exemplars, tasks still run."""
    service = start_service(OTEL_TRACES_SAMPLER="always_off", **otlp_env(otlp_receiver))
    task_id = service.client.post("/safe-notify").json()["task_ids"][0]
    wait_until(lambda: service.client.get(f"/tasks/{task_id}").json()["state"] == "succeeded")
    metrics = service.metrics(openmetrics=True)
    service.stop()  # flushes the span processor: anything sampled would be exported now
    assert otlp_receiver.spans == []
    assert "trace_id" not in metrics


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
        wait_until(lambda s=service: s.events("task.succeeded"))
        (ended,) = service.events("task.succeeded")
        assert ended["task_id"] == task_id and ended["level"] == "info"
        for field in ("started_at", "finished_at", "duration_seconds", "queue_wait_seconds"):
            assert field in ended
    assert not quiet.events("task.enqueued") and not quiet.events("task.started")
    for service, level in ((lifecycle, "info"), (debug, "debug")):
        (enqueued,) = service.events("task.enqueued")
        (started,) = service.events("task.started")
        (ended,) = service.events("task.succeeded")
        assert enqueued["level"] == started["level"] == level
        assert enqueued["task_id"] == started["task_id"] == ended["task_id"]
        assert started["trace_id"] == ended["trace_id"] and "enqueued_at" in enqueued
