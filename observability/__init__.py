"""Observability for FastAPI background tasks: every task a route adds through ``Tasks`` runs
through one recorder (Prometheus metrics, an OpenTelemetry span, structured log lines), in
process or on Celery workers. This package never imports ``service``.

The public names are below; they are loaded on first use, so that importing a submodule (the
metrics directory, which must be claimed before ``prometheus_client`` is imported) stays
cheap."""

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

    from observability.instrumentation import Telemetry, instrument
    from observability.settings import ObservabilitySettings
    from observability.tasks.batch import TaskBatch, Tasks
    from observability.tasks.failure import FailureReport
    from observability.tasks.route import TaskRoute
    from observability.worker import instrument_worker

# FastAPI's own OpenTelemetry support would add a second server span (with the raw path and
# query) whenever a global tracer provider exists: pass this as ``FastAPI(telemetry=...)``.
NATIVE_TELEMETRY_OFF: Final["TelemetryConfig"] = {"tracing": False, "metrics": False, "logs": False}

_PUBLIC = {
    "instrument": "observability.instrumentation",
    "Telemetry": "observability.instrumentation",
    "ObservabilitySettings": "observability.settings",
    "Tasks": "observability.tasks.batch",
    "TaskBatch": "observability.tasks.batch",
    "TaskRoute": "observability.tasks.route",
    "FailureReport": "observability.tasks.failure",
    "instrument_worker": "observability.worker",
}

__all__ = [
    "NATIVE_TELEMETRY_OFF",
    "FailureReport",
    "ObservabilitySettings",
    "TaskBatch",
    "TaskRoute",
    "Tasks",
    "Telemetry",
    "instrument",
    "instrument_worker",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'observability' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
