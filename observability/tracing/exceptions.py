"""A failure recorded on a span with its message and stack trace masked: neither may carry
user values (e-mail addresses, phone numbers) to the tracing backend. Its ``error.type`` is the
exception's class name, never a message."""

import traceback
from collections.abc import Callable

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, Status, StatusCode


def record_masked(
    span: Span, error: BaseException, mask: Callable[[str], str], message: str | None = None
) -> None:
    """Add ``error``'s exception event to ``span``; ``message`` replaces ``str(error)``."""
    span.record_exception(
        error,
        attributes={
            "exception.message": mask(str(error) if message is None else message),
            "exception.stacktrace": mask("".join(traceback.format_exception(error))),
        },
    )


def mark_failed(
    span: Span,
    error_type: str,
    message: str,
    error: BaseException | None,
    mask: Callable[[str], str],
) -> None:
    """Status ERROR (``{error_type}: {message}``, masked), ``error.type`` and, if any, the
    exception event. ``error_type``: the exception's class name."""
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {mask(message)}"))
    if error is not None:
        record_masked(span, error, mask, message)
