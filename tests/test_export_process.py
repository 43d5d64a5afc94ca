"""Span export through the helper process: spans arrive exactly as the in-place exporter would
encode them, a child that dies fails only its batch, shutdown ends a hanging export."""

import os
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState

from observability.tracing.codec import flatten, rebuild
from observability.tracing.process_exporter import ProcessSpanExporter
from tests.conftest import OtlpReceiver, wait_until
from tests.stack.live import free_port


def sample_spans() -> list[ReadableSpan]:
    """A server span, a failed child with an exception event, a span with a link, trace state
    and attributes beyond the limit (dropped)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "export-test"}),
        span_limits=SpanLimits(max_span_attributes=3),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("observability.runner", "1.0")
    with (
        tracer.start_as_current_span(
            "POST /send-notification/{email}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.response.status_code": 200},
        ) as server,
        tracer.start_as_current_span("background_task write_log") as task,
    ):
        task.set_attributes({"background_task.queue_wait_seconds": 0.25, "flag": True})
        task.set_attributes({"ids": ("a", "b"), "n": 3})  # the 4th attribute: dropped
        task.record_exception(ValueError("bad"), attributes={"exception.message": "bad"})
        task.set_status(Status(StatusCode.ERROR, "ValueError: bad"))
    context = server.get_span_context()
    linked = type(context)(
        context.trace_id, context.span_id, False, context.trace_flags, TraceState([("k", "v")])
    )
    with tracer.start_as_current_span("linked", links=[Link(linked, {"why": "fan-in"})]):
        pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_spans_cross_as_plain_values_and_encode_the_same() -> None:
    """Flattened, pickled and rebuilt, a batch encodes to exactly the OTLP request the in-place
    exporter would send (dropped counts, events, links, status and trace state included)."""
    spans = sample_spans()
    rebuilt = rebuild(pickle.loads(pickle.dumps(flatten(spans))))
    assert encode_spans(rebuilt) == encode_spans(spans)
    task = rebuilt[0]  # the first to end
    assert task.dropped_attributes == spans[0].dropped_attributes == 1
    assert task.events[0].name == "exception" and task.status.status_code is StatusCode.ERROR
    assert rebuilt[2].links[0].context.trace_state == TraceState([("k", "v")])


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessSpanExporter]:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    process_exporter = ProcessSpanExporter()
    yield process_exporter
    process_exporter.shutdown()


def export_children(parent: int | None = None) -> list[int]:
    """Pids of the export helpers of process ``parent`` (this one by default)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"observability.tracing.export_helper" in cmdline:
            pids.append(int(entry.name))
    return pids


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
