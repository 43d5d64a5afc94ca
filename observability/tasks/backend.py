"""What the route, the lifespan and ``GET /tasks/{id}`` ask of a task backend (in-process or
Celery); each backend executes tasks and tells its recorder what happened."""

from collections.abc import Sequence
from typing import Any, Protocol

from observability.tasks.admission import Admission
from observability.tasks.batch import TaskCall
from observability.tasks.recorder import Recorder


class Backend(Protocol):
    name: str
    recorder: Recorder

    async def start(self) -> None: ...
    def ready(self) -> bool: ...
    def stop_accepting(self) -> None: ...
    async def drain(self, grace: float) -> None: ...
    async def admit(self, calls: Sequence[TaskCall]) -> Admission: ...
    async def lookup(self, task_id: str) -> dict[str, Any] | None: ...
