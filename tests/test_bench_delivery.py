"""The delivery part of the benchmark works end to end (tiny counts; no timing is asserted, only
that every e-mail reached the SMTP sink and the report has its rows), and its histogram
quantiles are read as Prometheus reads them."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import histogram

ROOT = Path(__file__).resolve().parent.parent


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = histogram.bucketed([0.0005] * 50 + [0.003] * 49 + [0.02], (0.001, 0.005, 0.05))
    assert buckets == {0.001: 50.0, 0.005: 99.0, 0.05: 100.0, math.inf: 100.0}
    assert histogram.quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram.quantile(0.99, buckets) == pytest.approx(0.005)
    assert histogram.quantile(0.995, buckets) == pytest.approx(0.005 + 0.045 * 0.5)
    assert histogram.quantile(0.99, {0.01: 0.0, math.inf: 0.0}) is None
    assert histogram.quantile(0.99, {0.01: 1.0, math.inf: 100.0}) == 0.01  # in +Inf: the bound
    assert histogram.exact(0.99, [float(i) for i in range(1, 101)]) == 99.0


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_bench_delivery_part_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "result"
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--parts", "delivery",
        "--delivery-messages", "40", "--delivery-warmup", "10", "--delivery-rounds", "1",
        "--loadgen", "python", "--output", str(output),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    part = json.loads(output.with_suffix(".json").read_text())["results"]["delivery"]
    variants = {"bare", "bare-compat32", "inprocess", "bare-celery", "celery"}
    assert {r["variant"] for r in part["runs"]} == variants
    for r in part["runs"]:
        assert r["messages"] == 40  # every timed e-mail arrived at the sink
        assert r["p99_ms"] is not None  # the service's histogram saw them (the bare loop's own)
        # uvicorn re-raises the SIGTERM it shut down gracefully on: -15
        assert r.get("exit_code") in (None, 0, -15)
    assert set(part["ratios"]) == variants - {"bare"}
    assert part["ratios_vs"].keys() == {"bare-compat32", "bare-celery"}
    text = output.with_suffix(".md").read_text()
    assert "## Delivery" in text
    assert "e-mails/s >= 0.80x of the bare loop" in text
    assert "ours on Celery vs bare Celery with the same settings (informational" in text
