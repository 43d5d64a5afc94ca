"""structlog processors, each ``(logger, method, event_dict) -> event_dict``: trace ids of the
current span, the timestamp, masking of personal data, and the clean-up of stdlib records."""

import time

from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

from observability.logs.redaction import redact_value
from observability.logs.timestamps import iso
from observability.tracing import ids


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id``/``span_id`` (hex) of the current span, if any and not given."""
    if "trace_id" in event_dict:
        return event_dict
    event_dict.update(ids.log_ids(trace.get_current_span().get_span_context()))
    return event_dict


# Fields whose values this package produces itself (ids, clocks, enumerations): never user text.
_OWN_FIELDS = frozenset(
    {
        "timestamp", "level", "logger", "trace_id", "span_id", "task", "task_id", "backend",
        "outcome", "started_at", "finished_at", "enqueued_at", "duration_seconds",
        "queue_wait_seconds",
    }
)  # fmt: skip


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``timestamp``: now, ISO 8601 in UTC."""
    event_dict["timestamp"] = iso(time.time())
    return event_dict


def mask_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask e-mail addresses and phone numbers, and redact URL query values, in every value
    but our own fields'."""
    for key, value in event_dict.items():
        if key not in _OWN_FIELDS and not isinstance(value, int | float):
            event_dict[key] = redact_value(value)
    return event_dict


def drop_stdlib_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Drop the stdlib record objects that ``ProcessorFormatter`` leaves in the event."""
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    event_dict.pop("color_message", None)
    return event_dict
