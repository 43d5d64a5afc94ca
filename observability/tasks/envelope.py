"""What travels from the request to a backend: one task, by name, with its trace context."""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate


def new_task_id() -> str:
    """A random, unguessable task id: a UUID4 (122 bits from the OS's CSPRNG), 32 hex digits."""
    return uuid.uuid4().hex


def current_trace_context() -> dict[str, str]:
    """The W3C trace context of the current span, as a carrier dict."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@dataclass(frozen=True)
class TaskEnvelope:
    """One task run request: id, name, arguments, enqueue time (epoch seconds), trace context,
    and how many runs of it were retried before this one."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_task_id)
    enqueued_at: float = field(default_factory=time.time)
    trace_context: dict[str, str] = field(default_factory=current_trace_context)
    retries: int = 0
