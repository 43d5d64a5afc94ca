"""One run under way: its envelope, span and clocks, and the ids its log events and exemplars
carry (worked out once). A run ends exactly once, whichever thread ends it first (a watchdog
reporting a timeout, or the run's own thread returning)."""

import threading
import time

from opentelemetry.trace import Span

from observability.tasks.envelope import TaskEnvelope
from observability.tracing import ids


class Run:
    def __init__(
        self,
        envelope: TaskEnvelope,
        span: Span,
        started_at: float,
        started_perf: float,
        queue_wait: float,
    ) -> None:
        self.envelope = envelope
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
