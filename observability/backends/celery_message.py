"""The Celery message of a task: one registered Celery task (``RUN_TASK``) runs every
envelope, which travels as a plain dict with the publishing span's trace context."""

from dataclasses import asdict
from typing import Any

from observability.tasks.envelope import TaskEnvelope, current_trace_context

RUN_TASK = "background_task.run"
TIMED_OUT = "TIMED_OUT"  # a custom Celery state: reported timeout, body still running


def message_of(envelope: TaskEnvelope) -> dict[str, Any]:
    """The message body of ``envelope``, carrying the current span's context."""
    return asdict(envelope) | {"trace_context": current_trace_context()}


def envelope_from_message(payload: dict[str, Any]) -> TaskEnvelope:
    return TaskEnvelope(
        name=str(payload["name"]),
        args=tuple(payload.get("args", ())),
        kwargs=dict(payload.get("kwargs", {})),
        id=str(payload["id"]),
        enqueued_at=float(payload["enqueued_at"]),
        trace_context=dict(payload.get("trace_context", {})),
        retries=int(payload.get("retries", 0)),
    )
