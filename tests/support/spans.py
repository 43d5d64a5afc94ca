"""Sample SDK spans, as the service makes them, for the export and codec tests."""

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState


def sample_spans() -> list[ReadableSpan]:
    """A server span, a failed child with an exception event, a span with a link, trace state
    and attributes beyond the limit (dropped)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "export-test"}),
        span_limits=SpanLimits(max_span_attributes=3),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("observability.runner", "1.0")
    with (
        tracer.start_as_current_span(
            "POST /send-notification/{email}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.response.status_code": 200},
        ) as server,
        tracer.start_as_current_span("background_task write_log") as task,
    ):
        task.set_attributes({"background_task.queue_wait_seconds": 0.25, "flag": True})
        task.set_attributes({"ids": ("a", "b"), "n": 3})  # the 4th attribute: dropped
        task.record_exception(ValueError("bad"), attributes={"exception.message": "bad"})
        task.set_status(Status(StatusCode.ERROR, "ValueError: bad"))
    context = server.get_span_context()
    linked = type(context)(
        context.trace_id, context.span_id, False, context.trace_flags, TraceState([("k", "v")])
    )
    with tracer.start_as_current_span("linked", links=[Link(linked, {"why": "fan-in"})]):
        pass
    provider.shutdown()
    return list(exporter.get_finished_spans())
