"""Runs that pass their time limit: the message every backend reports, and the errors the
Celery worker raises for them."""


def timeout_message(seconds: float) -> str:
    return f"task exceeded its {seconds:g}s timeout"


class TaskTimeout(TimeoutError):
    """A run over the timeout, reported as outcome ``timeout`` (never retried)."""

    @classmethod
    def after(cls, seconds: float) -> "TaskTimeout":
        return cls(timeout_message(seconds))


class HardTimeLimitExceeded(TimeoutError):
    """A run Celery killed at its hard time limit, with the process running it."""
