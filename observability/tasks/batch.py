"""The request's task batch: like Starlette's ``BackgroundTasks``, shared by the route and its
dependencies (the ``Tasks`` dependency), but each task is accepted or refused as a whole
before the response, and run by the app's backend."""

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from observability.tasks.envelope import TaskEnvelope
from observability.tasks.function import TaskFunction, task_name

BATCH_SCOPE_KEY = "observability.task_batch"


@dataclass(frozen=True)
class TaskCall:
    """An envelope with the function that runs it in this process."""

    envelope: TaskEnvelope
    func: TaskFunction
    parent: Context | None = None  # the enqueuing request's context, for runs in this process


@dataclass
class TaskBatch:
    """The tasks one request adds."""

    calls: list[TaskCall] = field(default_factory=list)

    def add_task(self, func: TaskFunction, *args: Any, **kwargs: Any) -> str:
        """Add ``func(*args, **kwargs)``; returns the task id."""
        envelope = TaskEnvelope(task_name(func), args, kwargs)
        self.calls.append(TaskCall(envelope, func, otel_context.get_current()))
        return envelope.id

    @property
    def task_ids(self) -> list[str]:
        return [call.envelope.id for call in self.calls]


async def get_task_batch(request: Request) -> TaskBatch:
    """The request's task batch (one per request, whoever asks for it)."""
    batch: TaskBatch | None = request.scope.get(BATCH_SCOPE_KEY)
    if batch is None:
        batch = request.scope[BATCH_SCOPE_KEY] = TaskBatch()
    return batch


Tasks = Annotated[TaskBatch, Depends(get_task_batch)]
