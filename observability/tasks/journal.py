"""A bounded in-memory record of recent tasks, for ``GET /tasks/{task_id}``."""

from collections import OrderedDict
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from observability import names


class TaskState(StrEnum):
    """Where a task is: the ``state`` field of ``GET /tasks/{task_id}``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DROPPED = "dropped"

    @classmethod
    def after(cls, outcome: str) -> "TaskState":
        """The state a run's ``outcome`` leaves its task in (a retried task waits again)."""
        return _OUTCOME_STATES[outcome]


_OUTCOME_STATES = {
    names.OUTCOME_SUCCESS: TaskState.SUCCEEDED,
    names.OUTCOME_FAILURE: TaskState.FAILED,
    names.OUTCOME_TIMEOUT: TaskState.TIMED_OUT,
    names.OUTCOME_RETRY: TaskState.QUEUED,
}


@dataclass
class TaskRecord:
    """State and timestamps of one task."""

    id: str
    name: str
    backend: str
    state: TaskState
    enqueued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    duration_seconds: float | None = None
    queue_wait_seconds: float | None = None
    error_type: str | None = None
    drop_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaskJournal:
    """The ``capacity`` most recently enqueued tasks; older ones are forgotten. A record changes
    only through the transitions below."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def __len__(self) -> int:
        return len(self._records)

    def queued(self, task_id: str, name: str, backend: str, enqueued_at: float) -> None:
        """A task was accepted."""
        self._add(TaskRecord(task_id, name, backend, TaskState.QUEUED, enqueued_at))

    def running(self, task_id: str, started_at: float, queue_wait: float) -> None:
        """A run of the task started."""
        record = self._records.get(task_id)
        if record is not None:
            record.state, record.started_at = TaskState.RUNNING, started_at
            record.queue_wait_seconds = queue_wait

    def finished(
        self,
        task_id: str,
        outcome: str,
        finished_at: float,
        duration: float,
        error_type: str | None,
    ) -> None:
        """A run of the task ended with ``outcome``."""
        record = self._records.get(task_id)
        if record is not None:
            record.state, record.finished_at = TaskState.after(outcome), finished_at
            record.duration_seconds, record.error_type = duration, error_type

    def dropped(
        self, task_id: str, name: str, backend: str, enqueued_at: float, reason: str,
        error_type: str | None,
    ) -> None:  # fmt: skip
        """The task will never run (recorded even if it was refused before being accepted)."""
        record = self._records.get(task_id)
        if record is None:
            record = TaskRecord(task_id, name, backend, TaskState.DROPPED, enqueued_at)
            self._add(record)
        record.state, record.drop_reason, record.error_type = TaskState.DROPPED, reason, error_type

    def _add(self, record: TaskRecord) -> None:
        self._records[record.id] = record
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)
