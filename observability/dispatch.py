"""From a request to a backend: the request-scoped task batch (a FastAPI dependency shared by
the route and its dependencies), admission before the response (503 when the backlog is full),
and release once the response is sent."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from starlette.types import ASGIApp, Receive, Scope, Send

from observability import names
from observability.envelope import TaskEnvelope
from observability.runner import TaskFunction, TaskRunner

RETRY_AFTER_SECONDS = 5
_ADMISSION = "observability.admission"
_BATCH = "observability.task_batch"


def task_name(func: TaskFunction) -> str:
    """The name a task is known by: its function's (or bound/static method's) ``__name__``."""
    while hasattr(func, "func"):  # functools.partial
        func = func.func
    return str(getattr(func, "__name__", type(func).__name__))


@dataclass(frozen=True)
class TaskCall:
    """An envelope with the function that runs it in this process."""

    envelope: TaskEnvelope
    func: TaskFunction
    parent: Context | None = None  # the enqueuing request's context, for runs in this process


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


class Backend(Protocol):
    name: str
    runner: TaskRunner

    async def start(self) -> None: ...
    def ready(self) -> bool: ...
    def stop_accepting(self) -> None: ...
    async def drain(self, grace: float) -> None: ...
    async def admit(self, calls: Sequence[TaskCall]) -> Admission: ...
    async def lookup(self, task_id: str) -> dict[str, Any] | None: ...


@dataclass
class TaskBatch:
    """The tasks one request adds; like Starlette's ``BackgroundTasks``, but each task is
    accepted (or refused) as a whole before the response, and run by the app's backend."""

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
    batch: TaskBatch | None = request.scope.get(_BATCH)
    if batch is None:
        batch = request.scope[_BATCH] = TaskBatch()
    return batch


Tasks = Annotated[TaskBatch, Depends(get_task_batch)]


def _refusal(batch: TaskBatch, error: BackendUnavailable) -> JSONResponse:
    refused = [task_id for task_id in batch.task_ids if task_id not in error.accepted]
    return JSONResponse(
        {
            "detail": str(error),
            "reason": error.reason,
            "task_ids": refused,
            "accepted_task_ids": sorted(error.accepted),
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class TaskRoute(APIRoute):
    """An ``APIRoute`` that admits the request's tasks into ``app.state.task_backend`` once the
    endpoint has returned, and answers 503 when they can't be accepted."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            response: Response = await handler(request)
            batch: TaskBatch | None = request.scope.get(_BATCH)
            if batch is None or not batch.calls:
                return response
            backend: Backend = request.app.state.task_backend
            try:
                request.scope[_ADMISSION] = await backend.admit(batch.calls)
            except BackendUnavailable as error:
                for call in batch.calls:
                    if call.envelope.id not in error.accepted:
                        backend.runner.dropped(call.envelope, error.reason, error)
                return _refusal(batch, error)
            return response

        return route_handler


class TaskReleaseMiddleware:
    """Pure ASGI middleware: releases the request's accepted tasks after the response is sent
    (or the connection is gone), never inside the endpoint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            admission: Admission | None = scope.get(_ADMISSION)
            if admission is not None:
                admission.release()
