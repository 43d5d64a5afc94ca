"""Runs that fail or time out, in a real uvicorn process: their metrics, journal state,
error.log line, log event and span. A failing run comes from ``log.txt`` made a directory (its
open fails), a slow one from ``log.txt`` made a FIFO (its open blocks until a reader comes)."""

from pathlib import Path
from typing import Any

from tests.support.fifo import FifoReader, make_fifo
from tests.support.metrics import sample_value
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until

PHONE = "+8613812345678"


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
    assert span_attributes(span)["error.type"] == "IsADirectoryError"
    assert [event.name for event in span.events] == ["exception"]
    failed = service.events("task.failed")
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
    timed_out = service.events("task.timed_out")
    assert timed_out[0]["task_id"] == task_id and timed_out[0]["error_type"] == "TimeoutError"
    assert "timeout" in (tmp_path / "data" / "error.log").read_text()
    FifoReader(fifo, seconds=1)
    wait_until(lambda: service.events("task.overran"))
