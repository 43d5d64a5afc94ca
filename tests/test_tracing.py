"""Task spans exported by a real uvicorn process to a real OTLP/HTTP receiver: their parent,
attributes, and the trace ids in the task's log lines."""

import re
from typing import Any

from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until

EMAIL = "alice.secret@example.com"


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
    succeeded = [e for e in service.events("task.succeeded") if e["task_id"] == task_id]
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
