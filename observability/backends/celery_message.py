"""The Celery message of a task: the envelope travels as a plain dict with the publishing
span's trace context, under a Celery task name of its own (``background_task.<name>``) so that
Celery's tools (events, ``inspect``, Flower) tell tasks apart; every such Celery task runs any
envelope by its name (``RUN_TASK`` too, the name messages were published under before).

What Celery shows of the arguments (``argsrepr``/``kwargsrepr``: events, ``inspect``, Flower)
is masked: one ``***`` per argument, keyword names kept; never a value, the data folder or the
trace context."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from observability.logs.redaction import REDACTED
from observability.tasks.envelope import TaskEnvelope, current_trace_context

RUN_TASK = "background_task.run"
TASK_PREFIX = "background_task."
TIMED_OUT = "TIMED_OUT"  # a custom Celery state: reported timeout, body still running


def celery_name(task: str) -> str:
    """The Celery task name a task is published under: ``write_log`` ->
    ``background_task.write_log``."""
    return TASK_PREFIX + task


def masked_reprs(message: Mapping[str, Any]) -> dict[str, str]:
    """``argsrepr`` and ``kwargsrepr`` of a message (publish options): ``('***', '***')``,
    ``{'to': '***'}``."""
    args: Sequence[Any] = message.get("args", ())
    kwargs: Mapping[str, Any] = message.get("kwargs", {})
    return {
        "argsrepr": repr(tuple(REDACTED for _ in args)),
        "kwargsrepr": repr(dict.fromkeys(map(str, kwargs), REDACTED)),
    }


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
