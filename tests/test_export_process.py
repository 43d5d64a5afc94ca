"""Span export through the helper process: batches reach the collector, a child that dies
fails only its batch, shutdown ends a hanging export (the span codec: test_span_codec.py)."""

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from observability.tracing.process_exporter import CHUNK_SPANS, ProcessSpanExporter
from tests.support.otlp import OtlpReceiver
from tests.support.polling import wait_until
from tests.support.processes import export_children, free_port
from tests.support.spans import sample_spans


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessSpanExporter]:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    process_exporter = ProcessSpanExporter()
    yield process_exporter
    process_exporter.shutdown()


def test_batches_reach_the_collector_through_the_child(
    exporter: ProcessSpanExporter, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is exported by the child with the OTEL_* settings, answered SUCCESS."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.endpoint}/v1/traces")
    spans = sample_spans()
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans[:1]) == SpanExportResult.SUCCESS
    assert [s.name for s in otlp_receiver.named("")] == [s.name for s in spans + spans[:1]]
    (resource, _) = otlp_receiver.spans[0]
    assert resource["service.name"] == "export-test"
    assert len(export_children()) == 1


def test_a_batch_of_many_chunks_arrives_whole_and_in_order(
    exporter: ProcessSpanExporter, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch handed over in several chunks is exported as one batch: every span, in order."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.endpoint}/v1/traces")
    spans = sample_spans() * (CHUNK_SPANS + 2)  # 3 spans each: a little over 3 chunks
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert [s.name for s in otlp_receiver.named("")] == [s.name for s in spans]
    assert len(export_children()) == 1


def unpicklable_span() -> ReadableSpan:
    """A span with an attribute value that can't be handed over (not a plain value)."""
    return ReadableSpan(
        name="unpicklable",
        context=SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)),
        resource=Resource({"service.name": "export-test"}),
        attributes={"lock": threading.Lock()},  # type: ignore[dict-item]
        start_time=1,
        end_time=2,
    )


def test_a_batch_that_cannot_be_handed_over_fails_alone(
    exporter: ProcessSpanExporter, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span that can't be pickled after a chunk already went over: that batch fails, none of
    it reaches the collector, and the next batch arrives alone."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.endpoint}/v1/traces")
    bad = sample_spans() * CHUNK_SPANS + [unpicklable_span()]
    assert exporter.export(bad) == SpanExportResult.FAILURE
    good = sample_spans()
    assert exporter.export(good) == SpanExportResult.SUCCESS
    assert [s.name for s in otlp_receiver.named("")] == [s.name for s in good]


class HangingCollector:
    """Accepts connections and never answers: an export to it blocks until its timeout."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", free_port()))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}/v1/traces"
        self.connected = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.connected.set()

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def hanging(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingCollector]:
    collector = HangingCollector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.endpoint)
    yield collector
    collector.close()


def export_in_background(exporter: ProcessSpanExporter) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(exporter.export(sample_spans())))
    thread.start()
    return thread, results


def test_a_child_that_dies_fails_its_batch_and_the_next_gets_a_new_one(
    exporter: ProcessSpanExporter, hanging: HangingCollector
) -> None:
    """SIGKILL of the child mid-export: that export returns FAILURE at once; the next batch
    starts a new child."""
    thread, results = export_in_background(exporter)
    assert hanging.connected.wait(30)  # the child is sending the batch
    (child,) = export_children()
    os.kill(child, 9)
    thread.join(10)
    assert results == [SpanExportResult.FAILURE]
    hanging.connected.clear()
    thread, results = export_in_background(exporter)
    assert hanging.connected.wait(30)
    assert wait_until(lambda: export_children()) != [child]
    exporter.shutdown()
    thread.join(10)
    assert results == [SpanExportResult.FAILURE]


def test_shutdown_ends_an_export_that_hangs(
    exporter: ProcessSpanExporter, hanging: HangingCollector
) -> None:
    """shutdown() during a hanging export: the child is stopped, the export fails, no child is
    left, and later exports fail at once without starting one."""
    thread, results = export_in_background(exporter)
    assert hanging.connected.wait(30)
    exporter.shutdown()
    thread.join(10)
    assert results == [SpanExportResult.FAILURE]  # long before the collector timeout (30 s)
    assert wait_until(lambda: not export_children())
    assert exporter.export(sample_spans()) == SpanExportResult.FAILURE
    assert not export_children()
