"""The access log: one ``http.request`` line per request, in fields (``method``, ``path``,
``route``, ``status_code``, ``duration_seconds``) rather than one string. It comes from the HTTP
telemetry middleware, which times the request (uvicorn's access record has no duration), once
the response has been sent and inside the request's span (so the line carries its trace id)."""

from starlette.types import Scope

from observability import names
from observability.logs.configuration import get_logger


class AccessLog:
    """Logs each request the middleware measured; ``path`` is the raw path and query string,
    masked by the log processors like every other field (query values become ``***``)."""

    def __init__(self) -> None:
        self.logger = get_logger("observability.http")

    def record(
        self, scope: Scope, method: str, route: str | None, status: int, duration: float
    ) -> None:
        query = scope.get("query_string", b"")
        path = scope["path"]
        if query:
            path = f"{path}?{query.decode('latin-1')}"
        self.logger.info(
            names.EVENT_HTTP_REQUEST,
            method=method,
            path=path,
            route=route,
            status_code=status,
            duration_seconds=duration,
        )
