"""The answers the API documents in its OpenAPI schema besides the endpoints' own models: size
limits, refused tasks, ``Idempotency-Key`` answers, and the 422 of every POST (FastAPI's
validation errors, or a key reused for another request)."""

import json
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class LimitExceeded(BaseModel):
    """A request beyond a size limit (413, 414, 431)."""

    detail: str
    limit_bytes: int


class TasksRefused(BaseModel):
    """Tasks not accepted (503): the backlog is full, the service is shutting down, the broker
    can't be reached, or the store of ``Idempotency-Key``s can't (``reason``
    ``idempotency_store_unavailable``: nothing was run)."""

    detail: str
    reason: str
    task_ids: list[str]
    accepted_task_ids: list[str]


class NotFound(BaseModel):
    detail: str


class NotificationAccepted(BaseModel):
    """A notification accepted (202): its task, to follow at ``Location`` (``/tasks/{id}``)."""

    id: str
    task_ids: list[str]


class ErrorDetail(BaseModel):
    """What is wrong, in a sentence."""

    detail: str


class ValidationIssue(BaseModel):
    """One invalid field, as FastAPI reports it: ``loc`` names it."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class RequestInvalid(BaseModel):
    """422: the fields that are invalid (a list), or, for an ``Idempotency-Key`` already used
    with another request, a sentence naming what differs."""

    detail: list[ValidationIssue] | str


LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": LimitExceeded, "description": "Request body too large"},
    414: {"model": LimitExceeded, "description": "URL (path and query string) too long"},
    431: {"model": LimitExceeded, "description": "Request header fields too large"},
}
_RETRY_AFTER = {"description": "seconds to wait", "schema": {"type": "string"}}
_REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the same "
    "Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}
TASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "Malformed Idempotency-Key"},
    409: {
        "model": ErrorDetail,
        "description": "A request with this Idempotency-Key is still in progress",
        "headers": {"Retry-After": _RETRY_AFTER},
    },
    422: {
        "model": RequestInvalid,
        "description": "Invalid field (named in `detail`), or an Idempotency-Key already used "
        "for a different request",
    },
    503: {
        "model": TasksRefused,
        "description": "Tasks refused; retry after the time given",
        "headers": {"Retry-After": _RETRY_AFTER},
    },
}
ACCEPTED_RESPONSES: dict[int | str, dict[str, Any]] = TASK_RESPONSES | {
    202: {
        "description": "Accepted: the task is queued",
        "headers": {
            "Location": {"description": "the task: `/tasks/{id}`", "schema": {"type": "string"}},
            "Idempotent-Replayed": _REPLAYED,
        },
    }
}
LOOKUP_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": NotFound, "description": "Task not known (never enqueued, or forgotten)"}
}
NOT_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready (starting or shutting down)"}
}


class EscapingJSONResponse(JSONResponse):
    """JSON that can always be sent: text that is not encodable as UTF-8 (a lone surrogate, as
    JSON's ``"\\ud800"`` decodes) is written as ``\\u`` escapes, instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (its body unchanged), sendable whatever input it echoes."""
    assert isinstance(exc, RequestValidationError)
    return EscapingJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
