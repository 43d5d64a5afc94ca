"""``observability.http.telemetry.HttpTelemetryMiddleware`` on a tiny inline app: the
``http_server_request_duration_seconds`` labels and the server span, with a registry and an
SDK tracer provider of the test's own."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from observability.http.telemetry import HttpTelemetryMiddleware
from observability.logs.redaction import redact
from observability.metrics.http import HttpMetrics

DURATION_COUNT = "http_server_request_duration_seconds_count"


class Telemetry:
    """An inline app behind the middleware, its registry and its finished spans."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        app = FastAPI()

        @app.post("/items/{id}")
        async def create(id: str) -> dict[str, str]:
            return {"id": id}

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("boom for bob@example.com")

        app.add_middleware(
            HttpTelemetryMiddleware,
            metrics=HttpMetrics(self.registry),
            tracer_provider=provider,
            excluded_paths={"/healthz"},
            mask=redact,
        )
        self.app = app

    def call(self, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> int:
        async def main() -> int:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return (await request(client)).status_code

        return asyncio.run(main())

    def count(self, method: str, route: str, status_code: str) -> float:
        labels = {"method": method, "route": route, "status_code": status_code}
        return self.registry.get_sample_value(DURATION_COUNT, labels) or 0.0

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


def test_duration_is_labelled_by_route_template_and_status() -> None:
    """Requests are counted under their route template and status code, never the raw path."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.post("/items/1")) == 200
    assert telemetry.call(lambda c: c.post("/items/alice@example.com")) == 200
    assert telemetry.count("POST", "/items/{id}", "200") == 2
    text = telemetry.exposition()
    assert "/items/1" not in text and "alice" not in text
    active = telemetry.registry.get_sample_value("http_server_active_requests", {"method": "POST"})
    assert active == 0


def test_unmatched_routes_share_one_label() -> None:
    """Paths that match no route are labelled <unmatched>, whatever the path."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.get("/nope")) == 404
    assert telemetry.call(lambda c: c.get("/nope/abc")) == 404
    assert telemetry.call(lambda c: c.get("/x@example.com")) == 404
    assert telemetry.count("GET", "<unmatched>", "404") == 3
    assert "/nope" not in telemetry.exposition()


def test_excluded_paths_are_neither_measured_nor_traced() -> None:
    """An excluded path (a probe) gets no duration sample and no span."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.get("/healthz")) == 200
    assert 'route="/healthz"' not in telemetry.exposition()
    assert telemetry.exporter.get_finished_spans() == ()


def test_unknown_method_becomes_other() -> None:
    """A method outside the known set is labelled _OTHER; the span keeps the original."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.request("PURGE", "/items/1")) == 405
    assert telemetry.count("_OTHER", "/items/{id}", "405") == 1
    assert 'method="PURGE"' not in telemetry.exposition()
    (span,) = telemetry.exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"


def test_server_span_is_named_by_route_and_masks_the_path() -> None:
    """The server span is named "POST /items/{id}" and its url.path has the e-mail masked."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.post("/items/alice@example.com", params={"q": "x"})) == 200
    (span,) = telemetry.exporter.get_finished_spans()
    assert span.name == "POST /items/{id}" and span.kind is SpanKind.SERVER
    attributes: dict[str, Any] = dict(span.attributes or {})
    assert attributes["url.path"] == "/items/a***@example.com"
    assert attributes["http.route"] == "/items/{id}"
    assert attributes["http.response.status_code"] == 200
    assert "alice" not in repr(attributes) and "q=x" not in repr(attributes)
    assert span.status.status_code is StatusCode.UNSET


def test_exception_marks_the_span_and_counts_500() -> None:
    """An endpoint that raises: the span is ERROR with a masked exception event; counted 500."""
    telemetry = Telemetry()
    assert telemetry.call(lambda c: c.get("/boom")) == 500
    assert telemetry.count("GET", "/boom", "500") == 1
    (span,) = telemetry.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
    (event,) = span.events
    assert event.name == "exception"
    assert "bob@example.com" not in repr(dict(event.attributes or {}))


def test_server_address_and_port_come_from_the_host_header() -> None:
    """server.address/.port are the Host header's (IPv6 brackets removed, the scheme's default
    port when it names none); the client's address (host part zeroed) and the protocol version
    are recorded."""
    telemetry = Telemetry()
    for host in ("[::1]:8443", "notify.example"):
        assert telemetry.call(lambda c, h=host: c.post("/items/1", headers={"Host": h})) == 200
    first, second = (dict(s.attributes or {}) for s in telemetry.exporter.get_finished_spans())
    assert (first["server.address"], first["server.port"]) == ("::1", 8443)
    assert (second["server.address"], second["server.port"]) == ("notify.example", 80)
    assert first["client.address"] == "127.0.0.0"
    assert first["network.protocol.version"] == "1.1"
    assert "url.query" not in first
