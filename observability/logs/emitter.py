"""Log events of the hot path (a task run's terminal event), written straight through the
configured structlog processor chain: the same processors, the same output logger and so the
same bytes as ``get_logger(name, **context).info(event, **fields)``, without the bound logger's
own work around them (its context copied and updated from re-packed keywords, the method's
dispatch). The chain and the output are those configured when the emitter is made, as for a
bound logger."""

import logging
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from structlog.typing import Processor


class Emitter:
    """Events of logger ``name`` bound to ``context``, at INFO or ERROR."""

    def __init__(self, name: str, **context: Any) -> None:
        config = structlog.get_config()
        # the configured list itself, as a bound logger holds it (changes to it reach both)
        self._processors: Iterable[Processor] = config["processors"]
        self._logger: Any = config["logger_factory"]()
        self._context: dict[str, Any] = {"logger": name, **context}
        probe = config["wrapper_class"](self._logger, processors=(), context={})
        self._enabled = {
            "info": probe.is_enabled_for(logging.INFO),
            "error": probe.is_enabled_for(logging.ERROR),
        }
        self._outputs: dict[str, Callable[..., Any]] = {
            "info": self._logger.info,
            "error": self._logger.error,
        }

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """As ``log.info(event, **fields)``."""
        if self._enabled["info"]:
            self._emit("info", event, fields)

    def error(self, event: str, fields: dict[str, Any]) -> None:
        """As ``log.error(event, **fields)``."""
        if self._enabled["error"]:
            self._emit("error", event, fields)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        event_dict: Any = {**self._context, **fields, "event": event}
        logger = self._logger
        try:
            for processor in self._processors:
                event_dict = processor(logger, method, event_dict)
        except structlog.DropEvent:
            return
        output = self._outputs[method]
        if isinstance(event_dict, str | bytes | bytearray):
            output(event_dict)
        elif isinstance(event_dict, tuple):
            args, kwargs = event_dict
            output(*args, **kwargs)
        elif isinstance(event_dict, dict):
            output(**event_dict)
        else:
            raise ValueError(f"the last processor returned {type(event_dict).__name__}")
