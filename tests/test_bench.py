"""The benchmark harness works end to end (tiny counts; no timing is asserted, only counts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench import runner_callgrind
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
        "--apps", "tutorial,ours-sampled-100",
        "--scenarios", "send-notification,send-notification-paced",
        "--paced-rates", "100,200", "--paced-seconds", "0.5",
        "--requests", "150", "--warmup", "20", "--rounds", "1",
        "--micro-iterations", "100", "--micro-repeats", "1", "--micro-variants", "sampled-100",
        "--micro-instructions", "0",  # counted apart: test_runner_instructions_under_callgrind
        "--output", str(output),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(output.with_suffix(".json").read_text())
    throughput = result["results"]["throughput"]
    runs = throughput["runs"]
    assert {r["app"] for r in runs} == {"tutorial", "ours-sampled-100"}
    sent = {"send-notification": 150, "send-notification-paced-100": 50}
    sent["send-notification-paced-200"] = 100  # paced: --paced-seconds at each rate
    assert {(r["app"], r["scenario"]) for r in runs} == {
        (app, scenario) for app in ("tutorial", "ours-sampled-100") for scenario in sent
    }
    for r in runs:
        assert r["accepted"] + r["rejected"] == sent[r["scenario"]]
        assert r["lost"] == 0
        assert r["lines_written"] == r["accepted"]
        assert r["server_cpu_us_per_request"] >= r["helper_cpu_us_per_request"] >= 0
    (ours,) = [s for s in throughput["servers"] if s["app"] != "tutorial"]
    # one server span and one task span per accepted request, warm-up included
    assert ours["otlp_sink"]["spans"] >= 2 * sum(sent.values())
    ratios = throughput["summary"]["ratios_vs_tutorial"]["ours-sampled-100"]
    assert list(ratios) == list(sent)  # the run's order: the paced rates after the others
    variant = result["results"]["runner"]["variants"]["sampled-100"]
    assert variant["otlp_sink"]["spans"] == variant["runner_runs"]
    report = output.with_suffix(".md").read_text()
    assert "## Throughput" in report
    for rate in (100, 200):  # issue 18's goal rows: p99, p50 and CPU, per paced rate
        for goal in ("p99 <= 1.3x", "p50 <= 1.2x", "CPU µs/req <= 1.1x"):
            row = f"`ours-sampled-100`: {goal} `tutorial`'s at the same load "
            assert f"{row}(`send-notification-paced-{rate}`)" in report


def test_bench_celery_part_compares_ours_with_project_conf_and_otel_stack(tmp_path: Path) -> None:
    """The Celery part runs every worker kind to the last task and reports the issue 18 rows."""
    output = tmp_path / "result"
    workers = "bare-project-conf,bare-project-conf-otel-100,ours-sampled-100"
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--parts", "celery",
        "--celery-tasks", "60", "--celery-skip", "10", "--celery-rounds", "2",
        "--celery-workers", workers, "--output", str(output),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    part = json.loads(output.with_suffix(".json").read_text())["results"]["celery"]
    assert part["config"]["workers"] == ["bare", *workers.split(",")]
    for worker, median in part["medians"].items():
        assert median["lines_lost"] == 0, worker
    # one span per task (the task's run), warm-up and start-up included
    assert part["medians"]["bare-project-conf-otel-100"]["spans_per_task"] == 1.0
    assert part["medians"]["ours-sampled-100"]["spans_per_task"] == 1.0
    otel = [r for r in part["runs"] if r["worker"] == "bare-project-conf-otel-100"]
    assert all("-E" in r["command"] for r in otel)
    assert len(part["round_ratios"]["bare-project-conf"]["ours-sampled-100"]) == 2
    assert set(part["ratios"]["bare-project-conf-otel-100"]) == {"ours-sampled-100"}
    report = output.with_suffix(".md").read_text()
    assert "`ours-sampled-100`: tasks/s >= 0.90x `bare-project-conf`" in report
    assert "`ours-sampled-100` beats `bare-project-conf-otel-100`" in report


@pytest.mark.skipif(not runner_callgrind.available(), reason="valgrind is not installed")
def test_runner_instructions_under_callgrind(tmp_path: Path) -> None:
    """The runner part counts a run's and an accepted()'s instructions, with goal rows."""
    result = runner_callgrind.measure(["sampled-100"], 300, 100, tmp_path)
    counts = result["sampled-100"]
    assert 50_000 < counts["run"] < 5_000_000  # a run is some 100k instructions
    assert 1_000 < counts["accepted"] < 500_000
    (row,) = runner_callgrind.goals(result)
    assert "sampled-100" in row[0] and row[2] is (counts["run"] <= 260_000)
    assert "| sampled-100 |" in "\n".join(runner_callgrind.markdown(result))
