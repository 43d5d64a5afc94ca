"""Span export that can't hurt the service and can't fail unseen: a bounded queue in front of
the batch processor, every span that leaves it counted (exported, failed, dropped), and a
shutdown that ends in bounded time even when the collector is down or slow."""

import os
import threading
import time
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Counter, Gauge

from observability import names
from observability.logs.configuration import get_logger

DEFAULT_MAX_QUEUE_SIZE = 2048  # the OTEL_BSP_MAX_QUEUE_SIZE default of the specification
DEFAULT_BATCH_SIZE = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE's
DEFAULT_SHUTDOWN_SECONDS = 5.0
DROP_LOG_INTERVAL_SECONDS = 10.0


class SpanExportMetrics:
    """``tracing_*`` metrics: what became of the spans handed to the exporter."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.exported = Counter(
            names.SPANS_EXPORTED,
            "Spans sent to the OTLP collector, by export result.",
            ("outcome",),
            registry=registry,
        )
        self.dropped = Counter(
            names.SPANS_DROPPED,
            "Spans never sent to the collector, by reason.",
            ("reason",),
            registry=registry,
        )
        self.queued = Gauge(
            names.SPANS_QUEUED,
            "Spans ended and waiting for export (bounded by OTEL_BSP_MAX_QUEUE_SIZE).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        for outcome in (names.OUTCOME_SUCCESS, names.OUTCOME_FAILURE):
            self.exported.labels(outcome)
        for reason in names.SPAN_DROP_REASONS:
            self.dropped.labels(reason)


class _Accounting:
    """Spans in flight between the processor and the exporter, with a hard bound."""

    def __init__(self, metrics: SpanExportMetrics, max_queue_size: int) -> None:
        self.metrics = metrics
        self.max_queue_size = max_queue_size
        self.in_flight = 0
        self._lock = threading.Lock()
        self._unlogged_drops = 0
        self._last_drop_log = 0.0
        self.log = get_logger("observability.tracing")

    def admit(self) -> bool:
        with self._lock:
            if self.in_flight >= self.max_queue_size:
                return False
            self.in_flight += 1
            self.metrics.queued.set(self.in_flight)
            return True

    def settle(self, count: int, outcome: str) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - count)
            self.metrics.queued.set(self.in_flight)
        self.metrics.exported.labels(outcome).inc(count)

    def abandon(self) -> int:
        """Forget the spans still in flight (the exporter was stopped); returns how many."""
        with self._lock:
            left, self.in_flight = self.in_flight, 0
            self.metrics.queued.set(0)
        return left

    def drop(self, count: int, reason: str) -> None:
        """Count dropped spans; log them at most once per ``DROP_LOG_INTERVAL_SECONDS``."""
        self.metrics.dropped.labels(reason).inc(count)
        with self._lock:
            self._unlogged_drops += count
            now = time.monotonic()
            if now - self._last_drop_log < DROP_LOG_INTERVAL_SECONDS:
                return
            dropped, self._unlogged_drops, self._last_drop_log = self._unlogged_drops, 0, now
        self.log.warning(names.EVENT_SPANS_DROPPED, reason=reason, spans=dropped)


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: every batch is counted by result, and never raises."""

    def __init__(self, exporter: SpanExporter, accounting: _Accounting) -> None:
        self.exporter = exporter
        self.accounting = accounting

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
        ok = result == SpanExportResult.SUCCESS
        self.accounting.settle(len(spans), names.OUTCOME_SUCCESS if ok else names.OUTCOME_FAILURE)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class AccountedSpanProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` behind a bounded admission: a span beyond
    ``OTEL_BSP_MAX_QUEUE_SIZE`` in flight is dropped and counted here (``queue_full``) instead
    of inside the SDK; spans ended after shutdown count as ``shutdown``. ``shutdown`` waits at
    most ``shutdown_seconds`` for the last export, then stops the exporter's retries."""

    def __init__(
        self,
        exporter: SpanExporter,
        metrics: SpanExportMetrics,
        *,
        max_queue_size: int | None = None,
        shutdown_seconds: float = DEFAULT_SHUTDOWN_SECONDS,
    ) -> None:
        size = max_queue_size or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)
        self.accounting = _Accounting(metrics, size)
        self.exporter = CountingSpanExporter(exporter, self.accounting)
        batch_size = min(size, _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH_SIZE))
        self.batch = BatchSpanProcessor(
            self.exporter, max_queue_size=size, max_export_batch_size=batch_size
        )
        self.shutdown_seconds = shutdown_seconds
        self._shutdown = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._shutdown:
            self.accounting.drop(1, names.SPAN_DROP_SHUTDOWN)
        elif self.accounting.admit():
            self.batch.on_end(span)
        else:
            self.accounting.drop(1, names.SPAN_DROP_QUEUE_FULL)

    def shutdown(self) -> None:
        self._shutdown = True
        closer = threading.Thread(target=self.batch.shutdown, name="span-export-shutdown")
        closer.start()
        closer.join(self.shutdown_seconds)
        if closer.is_alive():  # the collector is down or slow: stop retrying
            self.exporter.shutdown()
            closer.join(self.shutdown_seconds)
        left = self.accounting.abandon()
        if left:
            self.accounting.drop(left, names.SPAN_DROP_SHUTDOWN)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default
