"""What travels from the request to a backend: one task, by name, with its trace context."""

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate


def new_task_id() -> str:
    """A random, unguessable task id: 128 bits from the OS's CSPRNG, as 32 hex digits."""
    return secrets.token_hex(16)


def current_trace_context() -> dict[str, str]:
    """The W3C trace context of the current span, as a carrier dict."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@dataclass(frozen=True)
class TaskEnvelope:
    """One task run request: id, name, arguments, enqueue time (epoch seconds), trace context."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_task_id)
    enqueued_at: float = field(default_factory=time.time)
    trace_context: dict[str, str] = field(default_factory=current_trace_context)
