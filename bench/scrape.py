"""Part ``scrape``: what a ``GET /metrics`` costs as processes multiply (issue 18, item 4).

Targets (``bench/scrape_targets.py``): the service under ``uvicorn --workers N`` (N =
``--scrape-workers``, 1, 2, 4; N = 1 is one process, prometheus-client in single-process mode;
N > 1 is multiprocess mode, every scrape merging the mmap files of every process) and its Celery
worker (``--pool prefork -c 4``, merged metrics on its own port). Each is started afresh, gets
``--scrape-requests`` tasks (POST /send-notification, or messages published as the API does)
so that its series exist, then is scraped ``--scrape-count`` times (``bench/scrape_measure.py``).
At the largest N, and on Celery, ``--scrape-restarts`` worker processes are then killed
(SIGKILL; uvicorn's supervisor and the prefork pool start replacements, which get a few tasks
each) until the directory holds the files of that many dead processes, and it is scraped again.
``--scrape-gc-freeze both`` runs every target twice, with and without ``NOTIFY_GC_FREEZE`` (the
start-up objects left out of garbage collections), to compare their tails in the same run.

Per row: latency p50/p99 of a scrape, the server tree's CPU per scrape, the exposition's size
and series, the ``.db`` files, and, replayed in this process on a copy of the directory, how long
merging and encoding take. Goal: a scrape's p99 < 50 ms at 4 workers, API and Celery.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.scrape_measure import breakdown, measure, restart_workers
from bench.scrape_report import goals, markdown
from bench.scrape_targets import ApiCluster, CeleryWorker, Target

__all__ = ["add_arguments", "goals", "markdown", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scrape")
    group.add_argument("--scrape-count", type=int, help="scrapes per row (200)")
    group.add_argument("--scrape-restarts", type=int, help="dead workers' files wanted (50)")
    group.add_argument("--scrape-requests", type=int, help="tasks before scraping (200)")
    group.add_argument("--scrape-workers", default="1,2,4", help="uvicorn --workers, each")
    group.add_argument("--scrape-celery-concurrency", type=int, default=4)
    group.add_argument(
        "--scrape-gc-freeze", choices=("on", "off", "both"), default="on", help="NOTIFY_GC_FREEZE"
    )


def defaults(opts: argparse.Namespace) -> None:
    opts.scrape_count = opts.scrape_count or (50 if opts.quick else 200)
    opts.scrape_restarts = opts.scrape_restarts or (12 if opts.quick else 50)
    opts.scrape_requests = opts.scrape_requests or (100 if opts.quick else 200)


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    defaults(opts)
    counts = sorted({int(n) for n in opts.scrape_workers.split(",") if n})
    concurrency = opts.scrape_celery_concurrency
    print(
        f"scrape: {opts.scrape_count} scrapes a row; API --workers {counts}, Celery -c "
        f"{concurrency}; {opts.scrape_restarts} restarts at the largest",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    freezes = {"on": (True,), "off": (False,), "both": (True, False)}[opts.scrape_gc_freeze]
    for freeze in freezes:
        tag = "" if freeze else "-nofreeze"
        for n in counts:
            restarts = opts.scrape_restarts if n == counts[-1] and n > 1 else 0
            target = ApiCluster(n, tmp / f"api-{n}{tag}", gc_freeze=freeze)
            rows += rounds(target, "api", n, restarts, opts, tmp)
        worker = CeleryWorker(concurrency, tmp / f"celery{tag}", gc_freeze=freeze)
        rows += rounds(worker, "celery", concurrency, opts.scrape_restarts, opts, tmp)
    return {
        "config": {
            "scrapes": opts.scrape_count,
            "restarts": opts.scrape_restarts,
            "requests": opts.scrape_requests,
            "api_workers": counts,
            "celery_concurrency": concurrency,
            "gc_freeze": opts.scrape_gc_freeze,
        },
        "rows": rows,
    }


def rounds(
    target: Target, kind: str, n: int, restarts: int, opts: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    """The rows of one target: fresh, then (``restarts`` > 0) after that many dead workers.
    The target is stopped in the end, whatever happens."""
    rows = []
    try:
        target.drive(opts.scrape_requests)
        rows.append(row(target, kind, n, "fresh", None, opts, tmp))
        if restarts:
            print(f"scrape: {target.name}: killing workers ({restarts} wanted)", flush=True)
            restarted = restart_workers(target, restarts, tasks_per_round=2 * n)
            rows.append(row(target, kind, n, f"after {restarts} restarts", restarted, opts, tmp))
    finally:
        target.stop()
    return rows


def row(
    target: Target,
    kind: str,
    n: int,
    state: str,
    restarted: dict[str, Any] | None,
    opts: argparse.Namespace,
    tmp: Path,
) -> dict[str, Any]:
    measured = measure(target, opts.scrape_count)
    parts = breakdown(target.metrics_dir(), tmp)
    print(
        f"scrape: {target.name} {state}: p50 {measured['p50_ms']:.2f} ms, p99 "
        f"{measured['p99_ms']:.2f} ms, CPU {measured['cpu_ms_per_scrape']:.2f} ms/scrape, "
        f"{measured['db_files']} files, {measured['series']} series",
        flush=True,
    )
    return {
        "target": kind,
        "name": target.name,
        "processes": n,
        "state": state,
        "gc_freeze": target.gc_freeze,
        "restarted": restarted,
        "breakdown": parts,
        **measured,
    }
