"""One pure ASGI middleware for the HTTP side: the request's server span (OpenTelemetry HTTP
semantic conventions, parent taken from the incoming W3C headers) and the ``http_server_*``
metrics, labelled by route template, with the clock stopped when the response has been sent.

It replaces the OpenTelemetry ASGI/FastAPI instrumentation, which made three spans per request
(two of them for ``send``/``receive``) and resolved the route twice; what that cost is measured
in ``bench/``."""

import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.logs.access_log import AccessLog
from observability.logs.redaction import mask_address, redact_query_string
from observability.metrics.http import HttpMetrics
from observability.tracing import ids, scope
from observability.tracing.exceptions import record_masked

UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"  # any other method: clients must not be able to mint series
DEFAULT_PORTS = {"http": 80, "https": 443}


def route_template(scope: Scope) -> str | None:
    """The matched route's path template (never the raw path, which may hold user values)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


class _HeaderGetter(Getter[Scope]):
    """Reads W3C propagation headers from an ASGI scope."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier["headers"] if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier["headers"]]


_GETTER = _HeaderGetter()


def _parent_context(scope: Scope, fields: frozenset[bytes]) -> otel_context.Context | None:
    """The incoming trace context; skipped (None: a new trace) when no propagation header is
    present, which spares the propagators' parsing on most requests."""
    if any(name in fields for name, _ in scope["headers"]):
        return propagate.extract(scope, getter=_GETTER)
    return None


class HttpTelemetryMiddleware:
    """Server span and HTTP metrics of every request, but for ``excluded_paths`` (probes and
    ``/metrics``). ``mask`` scrubs user values from the raw path (the ``url.path`` attribute),
    the user agent and exception messages; ``mask_query`` from the query string (``url.query``:
    by default every value is replaced by ``***``). ``access_log``, if given, logs each request
    once its response has been sent."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        tracer_provider: TracerProvider,
        excluded_paths: Iterable[str],
        mask: Callable[[str], str],
        mask_query: Callable[[str], str] = redact_query_string,
        mask_address: Callable[[str], str] = mask_address,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = scope.tracer(tracer_provider, __name__)
        self.excluded_paths = frozenset(excluded_paths)
        self.mask = mask
        self.mask_query = mask_query
        self.mask_address = mask_address
        self.access_log = access_log
        self.propagation_fields = frozenset(
            name.encode("latin-1") for name in propagate.get_global_textmap().fields
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        span = self.tracer.start_span(
            method,
            context=_parent_context(scope, self.propagation_fields),
            kind=SpanKind.SERVER,
        )
        if span.is_recording():
            span.set_attributes(self._request_attributes(scope, method))
        active = self.metrics.active_for(method)
        active.inc()
        start = time.perf_counter()
        status = 500
        done = False

        def finish(error: BaseException | None = None) -> None:
            nonlocal done
            if done:
                return
            done = True
            active.dec()
            route = route_template(scope)
            duration = time.perf_counter() - start
            self.metrics.duration_for(method, route or UNMATCHED_ROUTE, str(status)).observe(
                duration, exemplar=ids.exemplar(span.get_span_context())
            )
            if self.access_log is not None:
                self.access_log.record(scope, method, route, status, duration)
            if span.is_recording():
                _finish_span(span, method, route, status, error, self.mask)
            span.end()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            finish(exc)
            raise
        finally:
            finish()
            otel_context.detach(token)

    def _request_attributes(self, scope: Scope, method: str) -> dict[str, Any]:
        """The HTTP semantic conventions' request attributes (required and recommended), once
        per sampled request: the query string and the user agent masked, the server's address
        and port as the client named them (``Host``), else where it was listening."""
        scheme = scope.get("scheme", "http")
        attributes: dict[str, Any] = {
            http_attributes.HTTP_REQUEST_METHOD: method,
            url_attributes.URL_SCHEME: scheme,
            url_attributes.URL_PATH: self.mask(scope["path"]),
            network_attributes.NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
        }
        if method == OTHER_METHOD:
            attributes[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] = scope["method"][:32]
        if query := scope.get("query_string"):
            query_text = self.mask_query(query.decode("latin-1"))
            attributes[url_attributes.URL_QUERY] = self.mask(query_text)
        if client := scope.get("client"):
            attributes[client_attributes.CLIENT_ADDRESS] = self.mask_address(client[0])
        host, agent = _host_and_user_agent(scope["headers"])
        if agent is not None:
            attributes[user_agent_attributes.USER_AGENT_ORIGINAL] = self.mask(agent)
        attributes.update(_server_address(host, scope.get("server"), scheme, self.mask))
        return attributes


def _host_and_user_agent(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The ``Host`` and ``User-Agent`` headers' values, in one pass over the headers."""
    host = agent = None
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"user-agent":
            agent = value.decode("latin-1")
    return host, agent


def _server_address(
    host: str | None, server: tuple[str, int | None] | None, scheme: str, mask: Callable[[str], str]
) -> dict[str, Any]:
    """``server.address``/``server.port`` from the ``Host`` header (its port, else the scheme's
    default), else from the listening socket (ASGI ``server``); nothing if neither."""
    if host:
        name, colon, port = host.rpartition(":")
        bracketed = name.startswith("[") and name.endswith("]")
        if not colon or not port.isdigit() or (":" in name and not bracketed):
            name, port = host, ""
        return {
            server_attributes.SERVER_ADDRESS: mask(name.strip("[]")),
            server_attributes.SERVER_PORT: int(port) if port else DEFAULT_PORTS.get(scheme, 80),
        }
    if server is None:
        return {}
    if server[1] is None:  # a Unix socket
        return {server_attributes.SERVER_ADDRESS: server[0]}
    return {server_attributes.SERVER_ADDRESS: server[0], server_attributes.SERVER_PORT: server[1]}


def _finish_span(
    span: trace.Span,
    method: str,
    route: str | None,
    status: int,
    error: BaseException | None,
    mask: Callable[[str], str],
) -> None:
    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
    if route is not None:
        span.set_attribute(http_attributes.HTTP_ROUTE, route)
        span.update_name(f"{method} {route}")
    if error is not None:
        record_masked(span, error, mask)
        span.set_attribute(error_attributes.ERROR_TYPE, type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
    elif status >= 500:
        span.set_attribute(error_attributes.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
