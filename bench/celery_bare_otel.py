"""The stack a Celery user would otherwise run: ``celery -A bench.celery_bare_otel worker -E``.

The bare task of ``bench/celery_bare.py`` (with the project's Celery settings from
``BENCH_CELERY_CONF``), traced by opentelemetry-instrumentation-celery as its documentation says
to set it up: in each pool process (``worker_process_init``), a ``TracerProvider`` (sampler from
``OTEL_TRACES_SAMPLER``/``_ARG``) with a ``BatchSpanProcessor`` and the OTLP/HTTP exporter
(endpoint from ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), then ``CeleryInstrumentor().instrument()``.
The harness starts it with ``-E``: task events, what celery-exporter and Flower read to give
metrics and task states. No log line per task beyond Celery's own (at WARNING: none)."""

from typing import Any

from celery import signals
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench.celery_bare import app, write_log

__all__ = ["app", "write_log"]

_providers: list[TracerProvider] = []


def instrument(**_: Any) -> None:
    """A pool process starts: its tracer provider, exporter thread and the instrumentation."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "bench-celery-otel"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _providers.append(provider)


def flush(**_: Any) -> None:
    """A pool process exits: its last spans are sent."""
    for provider in _providers:
        provider.shutdown()


signals.worker_process_init.connect(instrument, weak=False)
signals.worker_process_shutdown.connect(flush, weak=False)
