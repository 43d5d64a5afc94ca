"""structlog processors, each ``(logger, method, event_dict) -> event_dict``: trace ids of the
current span, the timestamp, masking of personal data, the clean-up of stdlib records, and the
JSON renderers (which copy the message under the key log platforms read)."""

import time
from collections.abc import Callable

import orjson
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
        "queue_wait_seconds", "node",
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


def json_renderer(message_key: str) -> Callable[[WrappedLogger, str, EventDict], bytes]:
    """The last processor of JSON lines: the event as orjson bytes, its ``event`` (already
    masked) copied under ``message_key`` too, unless that is empty. One dict store in the call
    that renders anyway: no processor of its own on the hot path."""
    dumps = orjson.dumps

    def render(_: WrappedLogger, __: str, event_dict: EventDict) -> bytes:
        return dumps(event_dict, default=str)

    def render_with_message(_: WrappedLogger, __: str, event_dict: EventDict) -> bytes:
        event_dict[message_key] = event_dict.get("event")
        return dumps(event_dict, default=str)

    return render_with_message if message_key else render


def json_text_renderer(message_key: str) -> Callable[[WrappedLogger, str, EventDict], str]:
    """``json_renderer`` as text, for stdlib records (``ProcessorFormatter`` wants ``str``)."""
    render = json_renderer(message_key)

    def render_text(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        return render(logger, method, event_dict).decode()

    return render_text
