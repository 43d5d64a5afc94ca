"""Part ``celery``: an instrumented Celery worker vs a bare one, same task, same Redis.

A Redis of the benchmark's own (``redis-server`` on a free port, nothing on disk; the machine's
Redis is never touched). For each worker and round: ``--celery-tasks`` messages are published
first, then the worker starts (``--pool prefork -c 2`` by default, ``--without-gossip
--without-mingle --without-heartbeat``, log level WARNING); the harness watches ``log.txt`` and
takes tasks/s = (tasks - skipped) / (time of line ``skipped`` .. time of the last line), which
leaves out the worker's start-up and its first tasks. Workers:

* ``bare``: ``celery -A bench.celery_bare worker``: the tutorial's ``write_log``
  (``open(log, 'a').write(message)``) as a plain Celery task, Celery's default settings;
* ``bare-project-conf``: the same bare task with every one of the project's Celery settings
  (the reliable Redis transport, late acks, reject on worker lost, prefetch 1, time limits,
  results and ``STARTED`` state stored in Redis, the transport options: ``PROJECT_CONF_KEYS``):
  what the configuration costs, apart from the instrumentation; the baseline of issue 18's goal;
* ``bare-project-conf-otel-10`` / ``-100``: the stack a Celery user would otherwise run: the
  same plus task events (``-E``, for celery-exporter or Flower) and
  opentelemetry-instrumentation-celery exporting over OTLP/HTTP (``bench/celery_bare_otel.py``);
* ``ours-sampled-10`` / ``ours-sampled-100``: ``celery -A service.worker worker``, the project's
  worker (runner: metrics, span per run exported over OTLP/HTTP to a local receiver, JSON logs to
  a file), messages as the API publishes them (``background_task.<name>`` with a
  ``TaskEnvelope``, masked reprs);
  ``ours-sampled-10-events``: the same with ``-E``.

CPU: the worker's whole process tree (main process, pool, their helpers), over the timed span,
per task. Ratios: worker / baseline of the same round, median over rounds (5 by default: rounds
are noisy on a shared machine); the per-round ratios are kept too. Goals (issue 18): ours /
``bare-project-conf`` >= 0.95 (10%) and >= 0.90 (100%) in tasks/s, <= 1.10 in CPU µs/task, and
ours beats the otel stack of the same sampling.

This module is the part itself (options, rounds, medians and ratios); the worker catalogue is
``bench/celery_workers.py``, one worker's round ``bench/celery_round.py``, the Redis
``bench/redis_server.py``, the Markdown and the goal rows ``bench/celery_report.py``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.celery_report import goals, markdown
from bench.celery_round import run_worker
from bench.celery_workers import (
    BASELINE,
    DEFAULT_WORKERS,
    OTEL_STACKS,
    PROJECT_BASELINE,
    WORKERS,
    project_conf,
)
from bench.common import selection
from bench.redis_server import Redis

__all__ = ["add_arguments", "goals", "markdown", "run"]

# issue 18, goal 2: ours / bare-project-conf, tasks/s at 10% and 100% sampling; CPU µs/task
GOALS = {"ours-sampled-10": 0.95, "ours-sampled-100": 0.90, "cpu": 1.10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("celery")
    group.add_argument("--celery-tasks", type=int, help="tasks per worker and round (5000)")
    group.add_argument("--celery-rounds", type=int, help="rounds (5)")
    group.add_argument("--celery-skip", type=int, help="first tasks not timed (200)")
    group.add_argument("--celery-pool", default="prefork")
    group.add_argument("--celery-concurrency", type=int, default=2)
    group.add_argument(
        "--celery-workers", default=",".join(DEFAULT_WORKERS), help="of: " + ", ".join(WORKERS)
    )


def defaults(opts: argparse.Namespace) -> None:
    opts.celery_tasks = opts.celery_tasks or (1000 if opts.quick else 5000)
    opts.celery_rounds = opts.celery_rounds or (1 if opts.quick else 5)
    opts.celery_skip = opts.celery_skip or (100 if opts.quick else 200)


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    defaults(opts)
    workers = selection(opts.celery_workers, WORKERS, BASELINE, "celery worker(s)")
    print(
        f"celery: {opts.celery_tasks} tasks x {len(workers)} workers x {opts.celery_rounds} "
        f"rounds, --pool {opts.celery_pool} -c {opts.celery_concurrency}",
        flush=True,
    )
    redis = Redis(tmp / "redis")
    try:
        conf = project_conf(redis.url)
        runs = run_rounds(workers, redis, opts, tmp, conf)
    finally:
        redis.stop()
    return {
        "config": {
            "tasks": opts.celery_tasks,
            "rounds": opts.celery_rounds,
            "skipped": opts.celery_skip,
            "pool": opts.celery_pool,
            "concurrency": opts.celery_concurrency,
            "workers": workers,
            "project_conf": conf,
            "goals": GOALS,
        },
        "medians": medians(runs, workers),
        "ratios": ratios(runs, workers),
        "cpu_ratios": ratios(runs, workers, "cpu_us_per_task"),
        "round_ratios": round_ratios(runs, workers),
        "cpu_round_ratios": round_ratios(runs, workers, "cpu_us_per_task"),
        "runs": runs,
    }


def run_rounds(
    workers: list[str], redis: Redis, opts: argparse.Namespace, tmp: Path, conf: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every round, every worker once, in alternating order (a slow drift of the machine weighs
    on every worker alike); the runs' records."""
    runs: list[dict[str, Any]] = []
    for round_no in range(opts.celery_rounds):
        order = workers if round_no % 2 == 0 else workers[::-1]
        for worker in order:
            r = run_worker(worker, redis, opts, round_no, tmp, conf)
            print(
                f"  round {round_no} {worker:<18} {r['tasks_per_s']:7.0f} tasks/s  "
                f"{r['cpu_us_per_task']:6.0f} CPU µs/task  lines {r['lines_written']}/"
                f"{r['tasks']}  spans {r['otlp_sink'].get('spans', '-')}",
                flush=True,
            )
            runs.append(r)
    return runs


def medians(runs: list[dict[str, Any]], workers: list[str]) -> dict[str, dict[str, Any]]:
    """Per worker, the median over rounds (lines lost: the sum)."""
    return {
        w: {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs if r["worker"] == w),
            "cpu_us_per_task": statistics.median(
                r["cpu_us_per_task"] for r in runs if r["worker"] == w
            ),
            "lines_lost": sum(r["tasks"] - r["lines_written"] for r in runs if r["worker"] == w),
            "spans_per_task": _median_spans(runs, w),
        }
        for w in workers
    }


def ratios(
    runs: list[dict[str, Any]], workers: list[str], key: str = "tasks_per_s"
) -> dict[str, dict[str, float]]:
    """Per baseline (``bare``, ``bare-project-conf``, and each otel stack for the ``ours-*``
    worker of the same sampling) and worker, the median over rounds of the worker's ``key``
    over the baseline's of the same round."""
    return {
        base: {w: statistics.median(values) for w, values in by_worker.items()}
        for base, by_worker in round_ratios(runs, workers, key).items()
    }


def round_ratios(
    runs: list[dict[str, Any]], workers: list[str], key: str = "tasks_per_s"
) -> dict[str, dict[str, list[float]]]:
    """Per baseline and worker, the worker's ``key`` over the baseline's, round by round."""
    out: dict[str, dict[str, list[float]]] = {}
    for base in (b for b in (BASELINE, PROJECT_BASELINE, *OTEL_STACKS) if b in workers):
        by_round = {r["round"]: r for r in runs if r["worker"] == base}
        out[base] = {
            w: [r[key] / by_round[r["round"]][key] for r in runs if r["worker"] == w]
            for w in compared(base, workers)
        }
    return out


def compared(base: str, workers: list[str]) -> list[str]:
    """The workers compared with ``base``: all others with the bare ones, the ``ours-*`` of the
    same sampling with an otel stack."""
    if base in OTEL_STACKS:
        sampled = WORKERS[base].sampled
        return [w for w in workers if w.startswith("ours") and WORKERS[w].sampled == sampled]
    return [w for w in workers if w != base]


def _median_spans(runs: list[dict[str, Any]], worker: str) -> float | None:
    values = [
        r["otlp_sink"]["spans"] / r["tasks"]
        for r in runs
        if r["worker"] == worker and "spans" in r["otlp_sink"]
    ]
    return statistics.median(values) if values else None
