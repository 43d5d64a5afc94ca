"""The benchmark harness works end to end (tiny counts; no timing is asserted, only counts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench.otlp_sink import Sink

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_otlp_sink_accepts_exports_and_counts_spans(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink.endpoint)))
    tracer = provider.get_tracer("test")
    for _ in range(1200):
        with tracer.start_as_current_span("span"):
            pass
    assert provider.force_flush()
    provider.shutdown()
    stats = sink.stop()
    assert stats["spans"] == 1200
    assert stats["requests"] >= 3  # batches of at most 512
    assert stats["rejected"] == 0


def test_bench_throughput_and_runner_parts_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "result"
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--parts", "throughput,runner",
        "--apps", "tutorial,ours-sampled-100", "--scenarios", "send-notification",
        "--requests", "150", "--warmup", "20", "--rounds", "1",
        "--micro-iterations", "100", "--micro-repeats", "1", "--micro-variants", "sampled-100",
        "--output", str(output),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(output.with_suffix(".json").read_text())
    runs = result["results"]["throughput"]["runs"]
    assert {r["app"] for r in runs} == {"tutorial", "ours-sampled-100"}
    for r in runs:
        assert r["accepted"] + r["rejected"] == 150
        assert r["lost"] == 0
        assert r["lines_written"] == r["accepted"]
    (ours,) = [s for s in result["results"]["throughput"]["servers"] if s["app"] != "tutorial"]
    # one server span and one task span per accepted request, warm-up included
    assert ours["otlp_sink"]["spans"] >= 2 * 150
    variant = result["results"]["runner"]["variants"]["sampled-100"]
    assert variant["otlp_sink"]["spans"] == variant["runner_runs"]
    assert "## Throughput" in output.with_suffix(".md").read_text()
