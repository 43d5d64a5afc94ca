"""A recorder of its own for unit tests: a fresh registry, in-memory spans, a journal and the
failure reports it made."""

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from observability.metrics.tasks import TaskMetrics
from observability.tasks.failure import FailureReport
from observability.tasks.journal import TaskJournal
from observability.tasks.recorder import Recorder


class Harness:
    """A ``Recorder`` for backend ``inprocess`` and everything it records into."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reports: list[FailureReport] = []
        self.journal = TaskJournal(100)
        self.timeout = timeout
        self.recorder = Recorder(
            backend="inprocess",
            metrics=TaskMetrics(self.registry),
            tracer_provider=provider,
            timeout=timeout,
            journal=self.journal,
            failure_sink=self.report,
        )

    def report(self, report: FailureReport) -> None:
        self.reports.append(report)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"backend": "inprocess", **labels}) or 0.0
