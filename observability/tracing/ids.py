"""Trace and span ids as logs, exemplars and the W3C format write them: lowercase hex."""

from opentelemetry.trace import SpanContext


def trace_id_hex(context: SpanContext) -> str:
    return format(context.trace_id, "032x")


def log_ids(context: SpanContext) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of a valid context, for a log event; else nothing."""
    if not context.is_valid:
        return {}
    return {"trace_id": trace_id_hex(context), "span_id": format(context.span_id, "016x")}


def exemplar(context: SpanContext) -> dict[str, str] | None:
    """The exemplar labels of an observation made under a sampled span; else None."""
    return {"trace_id": trace_id_hex(context)} if context.trace_flags.sampled else None
