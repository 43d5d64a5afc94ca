"""Which failures are worth another attempt, and when: a task raises ``TransientError`` (or a
``ConnectionError`` or ``TimeoutError`` of a call it makes) and the backend runs it again after
an exponential backoff with jitter, at least ``retry_after`` seconds later when the error says
so (an HTTP ``Retry-After``), up to ``max_retries`` times. Anything else (a bug, bad input, a
file that can't be written, a recipient the server refuses) fails at once; a run over its own
time limit is never retried."""

import random
from dataclasses import dataclass

from observability.tasks.timeout import HardTimeLimitExceeded, TaskTimeout


class TransientError(Exception):
    """A failure that may not happen again (a server busy or unreachable for now)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
_NEVER_RETRIED: tuple[type[BaseException], ...] = (TaskTimeout, HardTimeLimitExceeded)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    backoff: float = 1.0  # seconds before the first retry; doubled for each next one
    max_backoff: float = 300.0
    jitter: float = 0.5  # each delay is shortened by up to this fraction, at random

    def delay(self, error: BaseException, retries: int) -> float | None:
        """Seconds to wait before running again a task whose run number ``retries`` (0: the
        first) failed with ``error``; None: no retry."""
        if retries >= self.max_retries or not self.retryable(error):
            return None
        delay = min(self.max_backoff, self.backoff * 2.0**retries)
        delay *= 1.0 - self.jitter * random.random()
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float):
            delay = max(delay, min(float(retry_after), self.max_backoff))
        return delay

    @staticmethod
    def retryable(error: BaseException) -> bool:
        return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, _NEVER_RETRIED)
