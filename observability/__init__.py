"""Observability for background tasks: the instrumented runner, its backends, metrics,
tracing and logging. This package never imports ``service``."""
