"""Children of unsampled spans made without the SDK's round trip: the same span the SDK would
return, and only where the SDK would return it."""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from observability.tasks.envelope import TaskEnvelope
from observability.tracing.stand_in import unsampled_child
from observability.tracing.task_span import TaskSpans

UNSAMPLED = SpanContext(
    0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0), trace_state=TraceState([("k", "v")])
)
SAMPLED = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))


def test_stand_in_is_what_the_sdk_returns_for_an_unsampled_parent() -> None:
    """Same trace id, flags and state as the SDK's child; a fresh span id; not recording."""
    provider = TracerProvider()
    parent = trace.set_span_in_context(NonRecordingSpan(UNSAMPLED))
    sdk_child = provider.get_tracer("t").start_span("x", context=parent).get_span_context()
    child = unsampled_child(provider)
    assert child is not None
    stand_in = child(UNSAMPLED)
    assert stand_in is not None and not stand_in.is_recording()
    made = stand_in.get_span_context()
    for field in ("trace_id", "trace_flags", "trace_state", "is_remote"):
        assert getattr(made, field) == getattr(sdk_child, field), field
    assert made.span_id not in (0, UNSAMPLED.span_id)


def test_sampled_parents_and_other_samplers_take_the_sdk_path() -> None:
    """A sampled parent, a sampler that is not parent-based, or one that may keep children of
    unsampled parents: no stand-in."""
    child = unsampled_child(TracerProvider())
    assert child is not None and child(SAMPLED) is None
    ratio = TracerProvider(sampler=TraceIdRatioBased(0.5))
    assert unsampled_child(ratio) is None
    keeps = TracerProvider(sampler=ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON))
    assert unsampled_child(keeps) is None


def test_task_span_of_an_unsampled_request_is_not_exported() -> None:
    """A run under an unsampled request has the request's trace id and exports nothing; under
    a sampled one it exports its span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = TaskSpans(provider, "inprocess")
    for parent in (UNSAMPLED, SAMPLED):
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        span = spans.start(TaskEnvelope("t"), context, 0.0, 0.0)
        assert span.get_span_context().trace_id == parent.trace_id
        TaskSpans.end(span, "success", 1.0, None, str)
    (exported,) = exporter.get_finished_spans()
    assert exported.parent is not None and exported.parent.span_id == SAMPLED.span_id
