"""structlog set-up: JSON lines (or console) on stdout, trace ids, masking, stdlib loggers
(uvicorn's own and access logs) routed through the same processors."""

import logging
import sys
from typing import Any, Literal

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from observability.redaction import mask_value

LogFormat = Literal["json", "console"]
_STDLIB_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "celery",
    "celery.worker",
    "celery.app.trace",
)


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id``/``span_id`` (hex) of the current span, if any."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def mask_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask e-mail addresses and phone numbers in every value."""
    return {key: mask_value(value) for key, value in event_dict.items()}


def drop_stdlib_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Keep the stdlib record's logger name, drop the record objects themselves."""
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_trace_ids,
    ]


def configure_logging(log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger to write one event per line to stdout."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    final: list[Processor] = [
        drop_stdlib_extras,
        structlog.processors.format_exc_info,
        mask_personal_data,
        renderer,
    ]
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(), processors=final
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers[:] = []
        stdlib_logger.propagate = True


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger bound to ``context``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
