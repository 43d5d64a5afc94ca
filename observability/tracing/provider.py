"""The tracer provider, configured from the standard ``OTEL_*`` environment variables."""

import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from prometheus_client import CollectorRegistry

from observability import names
from observability.logs.configuration import LogFormat, get_logger
from observability.tracing.accounting import AccountedSpanProcessor, SpanExportMetrics
from observability.tracing.process_exporter import ProcessSpanExporter
from observability.tracing.scope import VERSION

SUPPORTED_PROTOCOLS = ("http/protobuf",)


def create_tracer_provider(
    default_service_name: str,
    registry: CollectorRegistry | None = None,
    *,
    export_process: bool = False,
    log_format: LogFormat = "json",
    log_level: str = "INFO",
) -> ApiTracerProvider:
    """A provider that samples per ``OTEL_TRACES_SAMPLER`` and exports over OTLP/HTTP when an
    endpoint is set: in a helper process with ``export_process`` (``log_format``/``log_level``
    are its logging's), else on the batch processor's thread. With no endpoint spans are still
    created (logs and exemplars carry their trace ids) but not exported; with
    ``OTEL_SDK_DISABLED=true`` nothing is created. With a ``registry`` the export is accounted
    for in its ``tracing_*`` metrics."""
    env = os.environ
    metrics = SpanExportMetrics(registry if registry is not None else CollectorRegistry())
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return NoOpTracerProvider()
    provider = TracerProvider(resource=create_resource(default_service_name))
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol not in SUPPORTED_PROTOCOLS:
            get_logger(__name__).warning(
                names.EVENT_PROTOCOL_UNSUPPORTED, protocol=protocol, using="http/protobuf"
            )
        exporter: SpanExporter = (
            ProcessSpanExporter(log_format=log_format, log_level=log_level)
            if export_process
            else OTLPSpanExporter()
        )
        provider.add_span_processor(AccountedSpanProcessor(exporter, metrics))
    return provider


def create_resource(default_service_name: str) -> Resource:
    """The SDK's resource, with ``service.name`` from ``OTEL_SERVICE_NAME``, else from
    ``OTEL_RESOURCE_ATTRIBUTES``, else ``default_service_name``; ``service.version`` from
    ``OTEL_RESOURCE_ATTRIBUTES``, else this package's version."""
    ours: dict[str, str] = {SERVICE_NAME: default_service_name}
    if VERSION is not None:
        ours[SERVICE_VERSION] = VERSION
    configured = OTELResourceDetector().detect().attributes
    return Resource.create({key: value for key, value in ours.items() if key not in configured})


def shutdown_tracer_provider(provider: ApiTracerProvider) -> None:
    """Flush and stop a provider this package created."""
    if isinstance(provider, TracerProvider):
        provider.shutdown()
