"""The scrape part of the benchmark works end to end (tiny counts; no timing is asserted, only
that every row was measured, the restarts left dead processes' files behind and the report has
its rows), and its goal rows take the worst 4-worker row of each target."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import scrape_report

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE_KINDS = 7  # counter, histogram, summary and the gauge_{sum,max,min,mostrecent} archives


def _row(target: str, processes: int, state: str, p99: float) -> dict[str, Any]:
    return {"target": target, "processes": processes, "state": state, "p99_ms": p99}


def test_goal_rows_take_the_worst_four_worker_row_of_each_target() -> None:
    part = {
        "rows": [
            _row("api", 1, "fresh", 500.0),  # not at 4 workers: not a goal row
            _row("api", 4, "fresh", 10.0),
            _row("api", 4, "after 50 restarts", 60.0),
        ]
    }
    (api, celery) = scrape_report.goals(part)
    assert api[0].endswith("API `uvicorn --workers 4`")
    assert api[1] == "10.0 ms (fresh), 60.0 ms (after 50 restarts)"
    assert api[2] is False
    assert celery[1:] == ("-", None)  # not measured


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_bench_scrape_part_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "result"
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--parts", "scrape",
        "--scrape-workers", "1,2", "--scrape-count", "5", "--scrape-restarts", "2",
        "--scrape-requests", "10", "--scrape-celery-concurrency", "2", "--output", str(output),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(output.with_suffix(".json").read_text())["results"]["scrape"]["rows"]
    assert [(r["name"], r["state"]) for r in rows] == [
        ("API --workers 1", "fresh"),
        ("API --workers 2", "fresh"),
        ("API --workers 2", "after 2 restarts"),
        ("Celery -c 2", "fresh"),
        ("Celery -c 2", "after 2 restarts"),
    ]
    single, api2, api2_restarted, celery, celery_restarted = rows
    assert single["db_files"] == 0 and single["breakdown"] is None  # single-process mode
    assert api2["pids"] == 2 and api2["dead_pids"] == 0
    # the dead workers' files are compacted into archives: the directory does not grow with them
    assert api2_restarted["restarted"]["kills"] >= 2 and api2_restarted["dead_pids"] == 0
    assert api2_restarted["db_files"] <= api2["db_files"] + ARCHIVE_KINDS
    assert celery["dead_pids"] == 0 and celery_restarted["restarted"]["kills"] >= 2
    assert celery_restarted["dead_pids"] == 0
    for r in rows:
        assert r["scrapes"] == 5 and r["series"] > 0 and r["bytes"] > 0
        if r["db_files"]:
            assert set(r["breakdown"]) == {"reap_ms", "list_ms", "merge_ms", "encode_ms"}
    text = output.with_suffix(".md").read_text()
    assert "## Scrape" in text
    assert "scrape p99 < 50 ms at 4 workers" in text
