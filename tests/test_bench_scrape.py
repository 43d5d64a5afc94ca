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
    """A goal row is the worst p99 of a target at 4 workers, with the service's defaults (the
    rows of ``--scrape-gc-freeze`` without the freeze are for comparison only)."""
    part = {
        "rows": [
            _row("api", 1, "fresh", 500.0),  # not at 4 workers: not a goal row
            _row("api", 4, "fresh", 900.0) | {"gc_freeze": False},  # not the defaults
            _row("api", 4, "fresh", 10.0),
            _row("api", 4, "after 50 restarts", 60.0),
        ]
    }
    (api, celery) = scrape_report.goals(part)
    assert api[0].endswith("API `uvicorn --workers 4`")
    assert api[1] == "10.0 ms (fresh), 60.0 ms (after 50 restarts)"
    assert api[2] is False
    assert celery[1:] == ("-", None)  # not measured


def test_growth_lines_say_what_each_process_file_and_dead_process_adds() -> None:
    """The "how it grows" lines: CPU per extra API process (between the multiprocess rows),
    merge time per file (least squares), CPU per dead process (after the restarts vs fresh)."""
    breakdown = {"merge_ms": 1.0, "library_merge_ms": 4.0}
    rows = [
        _row("api", 1, "fresh", 5.0) | {"cpu_ms_per_scrape": 2.0, "p50_ms": 2.0},
        _row("api", 2, "fresh", 5.0) | {"cpu_ms_per_scrape": 3.0, "p50_ms": 3.0},
        _row("api", 4, "fresh", 5.0) | {"cpu_ms_per_scrape": 4.0, "p50_ms": 3.5},
        _row("api", 4, "after 50 restarts", 5.0) | {"cpu_ms_per_scrape": 4.5, "p50_ms": 3.5},
    ]
    for r, files, merge in zip(rows, (0, 10, 20, 27), (None, 1.0, 2.0, 2.7), strict=True):
        r |= {"name": f"API --workers {r['processes']}", "db_files": files, "restarted": None}
        r["breakdown"] = None if merge is None else breakdown | {"merge_ms": merge}
    rows[3]["restarted"] = {"kills": 50, "seconds": 1.0}
    assert scrape_report.growth(rows) == [
        "- per extra API process (2 -> 4 workers): CPU +0.50 ms/scrape, p50 +0.25 ms",
        "- one process (single-process mode) -> 2 (files): CPU 2.00 -> 3.00 ms/scrape",
        "- per `.db` file: merge +100 µs (prometheus-client's merge: +0 µs), least squares "
        "over 3 rows in the harness",
        "- per dead process, API --workers 4: CPU +10.0 µs/scrape (50 killed, +7 files: "
        "compacted into archives)",
    ]


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
        assert 0 < r["control_p50_ms"] <= r["control_p99_ms"]  # the HTTP floor, measured
        if r["db_files"]:
            assert set(r["breakdown"]) == {
                "reap_ms", "list_ms", "merge_ms", "encode_ms", "library_merge_ms",
                "library_encode_ms",
            }  # fmt: skip
    text = output.with_suffix(".md").read_text()
    assert "## Scrape" in text
    assert "- per `.db` file: merge" in text
    assert "scrape p99 < 50 ms at 4 workers" in text
