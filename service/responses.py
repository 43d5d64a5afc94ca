"""The error answers the API documents in its OpenAPI schema, besides FastAPI's own 422."""

from typing import Any

from pydantic import BaseModel


class LimitExceeded(BaseModel):
    """A request beyond a size limit (413, 414, 431)."""

    detail: str
    limit_bytes: int


class TasksRefused(BaseModel):
    """Tasks not accepted (503): the backlog is full, the service is shutting down, or the
    broker can't be reached."""

    detail: str
    reason: str
    task_ids: list[str]
    accepted_task_ids: list[str]


class NotFound(BaseModel):
    detail: str


LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": LimitExceeded, "description": "Request body too large"},
    414: {"model": LimitExceeded, "description": "URL (path and query string) too long"},
    431: {"model": LimitExceeded, "description": "Request header fields too large"},
}
TASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "model": TasksRefused,
        "description": "Tasks refused; retry after the time given",
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}
        },
    }
}
LOOKUP_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": NotFound, "description": "Task not known (never enqueued, or forgotten)"}
}
NOT_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready (starting or shutting down)"}
}
