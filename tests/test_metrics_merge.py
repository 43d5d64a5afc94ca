"""The scrape's merge of multiprocess files (``observability.metrics.merge``): the same families,
samples, values and order as prometheus-client's ``MultiProcessCollector.merge``, every kind
and gauge mode, archives included, and values read afresh on every scrape."""

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from observability.metrics import compaction
from observability.metrics.directory import ENV
from observability.metrics.merge import merged
from observability.metrics.multiprocess import readable_files

MODES = tuple(
    f"{live}{mode}" for mode in ("all", "sum", "max", "min", "mostrecent") for live in ("", "live")
)

WRITER = """
import sys
from prometheus_client import Counter, Gauge, Histogram, Summary
n = int(sys.argv[1])
runs = Counter("runs", "Runs.", ["task", "outcome"])
runs.labels("send", "ok").inc(n)
runs.labels('odd "value"\\n', "failed").inc(0.1 * n)
seconds = Histogram("run_seconds", "Run time.", ["task"], buckets=(0.01, 0.1, 1.0, 10.0))
for value in (0.005 * n, 0.5, 3.0 * n, 50.0):
    seconds.labels("send").observe(value)
Summary("latency_seconds", "Latency.").observe(0.25 * n)
for mode in sys.argv[2].split(","):
    gauge = Gauge(f"level_{mode}", "Level.", ["queue"], multiprocess_mode=mode)
    gauge.labels("default").set(n * 1.5)
    if n % 2:
        gauge.labels("odd").set(-n)
"""


def write(path: Path, n: int) -> None:
    """A process that writes every kind of metric (``n`` sets the values) and exits."""
    env = os.environ | {ENV: str(path)}
    command = [sys.executable, "-c", WRITER, str(n), ",".join(MODES)]
    subprocess.run(command, env=env, check=True)


def library(path: Path) -> list[Metric]:
    found = MultiProcessCollector.merge(readable_files(path), accumulate=True)  # type: ignore[no-untyped-call]
    return list(found)


def test_the_merge_is_the_library_merge(tmp_path: Path) -> None:
    """Counters, histograms, summaries and gauges of every mode from several processes merge
    into exactly the library's families, sample for sample and in its order."""
    for n in (1, 2, 3):
        write(tmp_path, n)
    ours = merged(readable_files(tmp_path))
    assert ours == library(tmp_path)
    assert len(ours) == 3 + len(MODES)
    runs = next(metric for metric in ours if metric.name == "runs")
    assert [s.value for s in runs.samples if s.labels["outcome"] == "ok"] == [6.0]


def test_archives_merge_as_the_library_merges_them(tmp_path: Path) -> None:
    """After dead processes' files are compacted into archives, and more processes write, the
    merge is still the library's."""
    for n in (1, 2):
        write(tmp_path, n)
    assert compaction.compact(tmp_path) > 0
    write(tmp_path, 5)
    assert any("archive" in name for name in os.listdir(tmp_path))
    assert merged(readable_files(tmp_path)) == library(tmp_path)


def test_every_scrape_reads_the_values_again(tmp_path: Path) -> None:
    """What is remembered between scrapes is the series' identities, never their values: a
    second merge has the counts written since the first."""
    write(tmp_path, 1)
    first = merged(readable_files(tmp_path))
    write(tmp_path, 4)
    second = merged(readable_files(tmp_path))
    assert second == library(tmp_path) and second != first
    runs = next(metric for metric in second if metric.name == "runs")
    assert [s.value for s in runs.samples if s.labels["outcome"] == "ok"] == [5.0]
