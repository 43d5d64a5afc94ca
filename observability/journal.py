"""A bounded in-memory record of recent tasks, for ``GET /tasks/{task_id}``."""

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal

TaskState = Literal["queued", "running", "succeeded", "failed", "timed_out", "dropped"]
OUTCOME_STATES: dict[str, TaskState] = {
    "success": "succeeded",
    "failure": "failed",
    "timeout": "timed_out",
    "retry": "queued",
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
    """The ``capacity`` most recently enqueued tasks; older ones are forgotten."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()

    def add(self, record: TaskRecord) -> None:
        self._records[record.id] = record
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def update(self, task_id: str, **changes: Any) -> None:
        record = self._records.get(task_id)
        if record is not None:
            for key, value in changes.items():
                setattr(record, key, value)

    def __len__(self) -> int:
        return len(self._records)
