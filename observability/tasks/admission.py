"""Admission: a backend accepts a request's tasks as a whole before the response is sent, and
releases them to run once it has been sent; or refuses them, saying why."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from observability import names
from observability.tasks.batch import TaskCall


class BackendUnavailable(Exception):
    """Tasks can't be accepted now; ``reason`` is the dropped-metric reason, ``accepted`` the ids
    of those that were accepted all the same (they will run)."""

    def __init__(self, reason: str, message: str, accepted: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.accepted = frozenset(accepted)


class BacklogFull(BackendUnavailable):
    def __init__(self, message: str) -> None:
        super().__init__(names.REASON_BACKLOG_FULL, message)


@dataclass
class Admission:
    """Accepted tasks waiting for the response to be sent."""

    calls: Sequence[TaskCall]
    _release: Callable[[Sequence[TaskCall]], None]
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._release(self.calls)
