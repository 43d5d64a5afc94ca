"""One run under way: its envelope, span and clocks, and the ids its log events and exemplars
carry (worked out once). A run ends exactly once, whichever thread ends it first (a watchdog
reporting a timeout, or the run's own thread returning)."""

import threading
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from observability.tasks.envelope import TaskEnvelope
from observability.tracing import ids

if TYPE_CHECKING:
    from observability.delivery import DeliveryRecorder

_CURRENT: ContextVar["Run | None"] = ContextVar("observability_current_run", default=None)


def current_run() -> "Run | None":
    """The run the calling code is part of (set while a task runs), or None."""
    return _CURRENT.get()


class Run:
    def __init__(
        self,
        envelope: TaskEnvelope,
        span: Span,
        started_at: float,
        started_perf: float,
        queue_wait: float,
        delivery: "DeliveryRecorder | None" = None,
    ) -> None:
        self.envelope = envelope
        self.delivery = delivery
        self.details: dict[str, Any] = {}  # added to the run's terminal log line
        self.span = span
        self.started_at = started_at
        self.started_perf = started_perf
        self.queue_wait = queue_wait
        self.outcome: str | None = None
        self.duration: float | None = None
        self._ending = threading.Lock()
        context = span.get_span_context()
        self.log_ids = ids.log_ids(context)
        self.exemplar = ids.exemplar(context)

    def end(self, outcome: str) -> float | None:
        """Claim the end of the run with ``outcome``: its duration, or None if it had ended."""
        if not self._ending.acquire(blocking=False):
            return None
        self.duration = time.perf_counter() - self.started_perf
        self.outcome = outcome
        return self.duration

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_perf

    def enter(self) -> object:
        """Make this the current run (``current_run``); returns the token for ``leave``."""
        return _CURRENT.set(self)

    @staticmethod
    def leave(token: object) -> None:
        _CURRENT.reset(token)  # type: ignore[arg-type]
