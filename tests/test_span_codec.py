"""The span codec of the export helper (``observability.tracing.codec``): a batch flattened to
plain values and rebuilt is the same batch, field by field and once encoded as OTLP."""

import pickle
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from observability.tracing.codec import flatten, rebuild
from tests.support.spans import sample_spans

PLAIN = (str, int, float, bool, type(None))


def context_fields(context: SpanContext | None) -> Any:
    if context is None:
        return None
    return (
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        list(context.trace_state.items()),
        context.is_remote,
    )


def exported_fields(span: ReadableSpan) -> dict[str, Any]:
    """Every field of a span that the OTLP exporter reads, as comparable values."""
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "context": context_fields(span.context),
        "parent": context_fields(span.parent),
        "kind": span.kind,
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": (span.status.status_code, span.status.description),
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(context_fields(k.context), dict(k.attributes or {})) for k in span.links],
        "dropped_links": span.dropped_links,
        "resource": (dict(span.resource.attributes), span.resource.schema_url),
        "scope": None if scope is None else (scope.name, scope.version, scope.schema_url),
    }


def assert_plain(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            assert_plain(item)
    else:
        assert isinstance(value, PLAIN), type(value)


def test_spans_cross_as_plain_values_and_encode_the_same() -> None:
    """Flattened, pickled and rebuilt, a batch encodes to exactly the OTLP request the in-place
    exporter would send (dropped counts, events, links, status and trace state included)."""
    spans = sample_spans()
    rebuilt = rebuild(pickle.loads(pickle.dumps(flatten(spans))))
    assert encode_spans(rebuilt) == encode_spans(spans)
    task = rebuilt[0]  # the first to end
    assert task.dropped_attributes == spans[0].dropped_attributes == 1
    assert task.events[0].name == "exception" and task.status.status_code is StatusCode.ERROR
    assert rebuilt[2].links[0].context.trace_state == TraceState([("k", "v")])


def test_rebuilt_spans_equal_the_originals_on_every_exported_field() -> None:
    """Each rebuilt span equals its original on every field the OTLP exporter reads."""
    spans = sample_spans()
    rebuilt = rebuild(flatten(spans))
    assert [exported_fields(s) for s in rebuilt] == [exported_fields(s) for s in spans]
    task, server, linked = rebuilt
    assert task.parent is not None and task.parent.span_id == server.context.span_id
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert task.events[0].attributes is not None
    assert task.events[0].attributes["exception.message"] == "bad"
    assert linked.links[0].attributes == {"why": "fan-in"}


def test_flat_batch_holds_only_plain_values() -> None:
    """The flattened batch is made of str, int, float, bool, None, tuples, lists and dicts."""
    assert_plain(flatten(sample_spans()))


def test_resource_and_scope_travel_once_per_batch() -> None:
    """Spans sharing a resource and a scope list each once; rebuilt, they share them again."""
    spans = sample_spans()
    batch = flatten(spans)
    assert len(batch.resources) == 1 and len(batch.scopes) == 1
    assert {flat.resource for flat in batch.spans} == {flat.scope for flat in batch.spans} == {0}
    rebuilt = rebuild(batch)
    assert all(span.resource is rebuilt[0].resource for span in rebuilt)
    assert all(span.instrumentation_scope is rebuilt[0].instrumentation_scope for span in rebuilt)


def test_distinct_resources_and_scopes_are_kept_apart() -> None:
    """Spans of two providers and two tracers keep their own resource and scope."""
    exporter = InMemorySpanExporter()
    for service in ("api", "worker"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope in ("first", "second"):
            with provider.get_tracer(scope, "2.0", schema_url="https://example.com/s").start_span(
                f"{service} {scope}"
            ):
                pass
    spans = list(exporter.get_finished_spans())  # (a provider's shutdown stops the exporter)
    batch = flatten(spans)
    assert len(batch.resources) == 2 and len(batch.scopes) == 4
    rebuilt = rebuild(batch)
    assert [exported_fields(s) for s in rebuilt] == [exported_fields(s) for s in spans]
    assert {s.resource.attributes["service.name"] for s in rebuilt} == {"api", "worker"}
    assert encode_spans(rebuilt) == encode_spans(spans)


def test_remote_parent_trace_state_and_missing_scope_round_trip() -> None:
    """A remote parent with trace state, sampled flags, and a span without a scope survive."""
    parent = SpanContext(1, 2, True, TraceFlags(TraceFlags.SAMPLED), TraceState([("vendor", "x")]))
    span = ReadableSpan(
        name="bare",
        context=SpanContext(1, 3, False, TraceFlags(TraceFlags.SAMPLED)),
        parent=parent,
        resource=Resource({"service.name": "bare"}, "https://example.com/r"),
        attributes={"n": 1, "ok": True, "ratio": 0.5, "ids": ("a", "b")},
        kind=SpanKind.CONSUMER,
        start_time=10,
        end_time=20,
        instrumentation_scope=None,
    )
    (rebuilt,) = rebuild(pickle.loads(pickle.dumps(flatten([span]))))
    assert exported_fields(rebuilt) == exported_fields(span)
    assert rebuilt.parent is not None and rebuilt.parent.is_remote
    assert rebuilt.parent.trace_state == TraceState([("vendor", "x")])
    assert rebuilt.instrumentation_scope is None
