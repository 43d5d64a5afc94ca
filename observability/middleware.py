"""Pure ASGI middleware recording ``http_server_*`` metrics, labelled by route template, with the
clock stopped when the response has been sent."""

import time

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.metrics import HttpMetrics

UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"  # any other method: clients must not be able to mint series


def route_template(scope: Scope) -> str:
    """The matched route's path template (never the raw path, which may hold user values)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _trace_exemplar() -> dict[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_flags.sampled:
        return {"trace_id": format(context.trace_id, "032x")}
    return None


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, excluded_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.excluded_paths = excluded_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        active = self.metrics.active.labels(method)
        exemplar = _trace_exemplar()
        start = time.perf_counter()
        status = 500
        recorded = False
        active.inc()

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                active.dec()
                self.metrics.duration.labels(method, route_template(scope), str(status)).observe(
                    time.perf_counter() - start, exemplar=exemplar
                )

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()
