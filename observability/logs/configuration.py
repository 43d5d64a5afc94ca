"""structlog set-up: JSON lines (or console) on stdout, trace ids, masking. Our own events take
structlog's fast path (no stdlib ``logging`` round trip, orjson); stdlib loggers (uvicorn's,
Celery's, Python warnings) are routed through the same processors by a ``ProcessorFormatter``.
uvicorn's access log stays off: the access line comes from ``observability.logs.access_log``."""

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import FilteringBoundLogger, Processor

from observability.logs.processors import (
    add_timestamp,
    add_trace_ids,
    drop_stdlib_extras,
    json_renderer,
    json_text_renderer,
    mask_personal_data,
)

LogFormat = Literal["json", "console"]
_STDLIB_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "celery",
    "celery.worker",
    "celery.app.trace",
    "py.warnings",
)


# Celery's own line per task received and per task succeeded: the runner's events say the same
# (with timestamps and trace ids), so below DEBUG only their warnings and errors are logged.
_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _common() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_timestamp,
        add_trace_ids,
    ]


def configure_logging(
    log_format: LogFormat = "json",
    level: str = "INFO",
    *,
    masking: bool = True,
    message_key: str = "message",
) -> None:
    """One event per line on stdout, for structlog and stdlib loggers alike (Python warnings
    included); personal data masked unless ``masking`` is off; JSON lines carry the event under
    ``message_key`` too (the key log platforms read; none if empty); Celery's per-task lines
    only at DEBUG; uvicorn's access log never (see ``observability.logs.access_log``)."""
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    stdout = sys.__stdout__ or sys.stdout  # the real stdout, even under Celery's redirection
    last: list[Processor] = [structlog.processors.format_exc_info]
    if masking:
        last.append(mask_personal_data)
    if log_format == "json":
        renderer: Processor = json_renderer(message_key)
        text_renderer: Processor = json_text_renderer(message_key)
        factory: Any = structlog.BytesLoggerFactory(stdout.buffer)
    else:
        renderer = text_renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(stdout)
    structlog.configure(
        processors=[*_common(), *last, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_common(), structlog.stdlib.add_logger_name],
            processors=[drop_stdlib_extras, *last, text_renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in _STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers[:] = []
        stdlib_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
    per_task = logging.WARNING if numeric_level > logging.DEBUG else logging.NOTSET
    for name in _PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(per_task)


def get_logger(name: str, **context: Any) -> FilteringBoundLogger:
    """A structlog logger named ``name`` (the ``logger`` field), bound to ``context``."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(logger=name, **context)
    return logger
