"""From a request to its backend: ``TaskRoute`` admits the request's tasks once the endpoint
has returned (503 when they can't be accepted), ``TaskMiddleware`` hands the app's backend to
the route and releases the accepted tasks once the response has been sent."""

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from observability.tasks.admission import Admission, BackendUnavailable
from observability.tasks.backend import Backend
from observability.tasks.batch import BATCH_SCOPE_KEY, TaskBatch

RETRY_AFTER_SECONDS = 5
_BACKEND = "observability.task_backend"
_ADMISSION = "observability.admission"


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


def _backend(scope: Scope) -> Backend:
    backend: Backend | None = scope.get(_BACKEND)
    if backend is None:
        raise RuntimeError("a TaskRoute needs TaskMiddleware (observability.instrument adds it)")
    return backend


class TaskRoute(APIRoute):
    """An ``APIRoute`` whose request's tasks (``Tasks``) are admitted into the backend once the
    endpoint has returned; 503 with ``Retry-After`` when they can't be accepted."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            response: Response = await handler(request)
            batch: TaskBatch | None = request.scope.get(BATCH_SCOPE_KEY)
            if batch is None or not batch.calls:
                return response
            backend = _backend(request.scope)
            try:
                request.scope[_ADMISSION] = await backend.admit(batch.calls)
            except BackendUnavailable as error:
                for call in batch.calls:
                    if call.envelope.id not in error.accepted:
                        backend.recorder.dropped(call.envelope, error.reason, error)
                return _refusal(batch, error)
            return response

        return route_handler


class TaskMiddleware:
    """Pure ASGI middleware: gives the routes ``backend``, and releases the request's accepted
    tasks after the response is sent (or the connection is gone), never inside the endpoint."""

    def __init__(self, app: ASGIApp, *, backend: Backend) -> None:
        self.app = app
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_BACKEND] = self.backend
        try:
            await self.app(scope, receive, send)
        finally:
            admission: Admission | None = scope.get(_ADMISSION)
            if admission is not None:
                admission.release()
