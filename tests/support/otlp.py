"""A real OTLP/HTTP trace receiver, and what a process needs to export to it."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.processes import free_port


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver: decodes ``ExportTraceServiceRequest`` protobufs."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.scopes: dict[bytes, tuple[str, str]] = {}  # span id -> scope name and version
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        resource = {
                            a.key: a.value.string_value for a in resource_spans.resource.attributes
                        }
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend((resource, s) for s in scope_spans.spans)
                            scope = (scope_spans.scope.name, scope_spans.scope.version)
                            receiver.scopes.update((s.span_id, scope) for s in scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def named(self, prefix: str) -> list[Span]:
        with self.lock:
            return [span for _, span in self.spans if span.name.startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def span_attributes(span: Span) -> dict[str, Any]:
    """The attributes of a received span as plain values."""
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return values


def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Environment that makes the service export spans quickly to ``receiver``."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "notification-test",
    }
