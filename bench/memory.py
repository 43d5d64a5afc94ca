"""Part ``memory``: the service's RSS over 10^5 tasks, via HTTP.

The service runs as in the throughput part (``ours-sampled-100``: everything on, every span
exported to a local OTLP receiver, JSON logs to a file). wrk sends
``POST /send-notification/{email}`` in chunks; after each chunk the harness waits until every
accepted task has written its line, then reads the server's ``VmRSS``. The first
``--memory-warmup`` tasks are the warm-up (at least the task journal's capacity,
``NOTIFY_TASK_HISTORY_SIZE`` = 10000 by default, so that the bounded journal is full); growth is
the RSS at the end over the RSS after the warm-up (goal: < 10%). The load generator and its
concurrency are the throughput part's options (``--loadgen``, ``--concurrency``): every part's
options are always there, whichever parts run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.apps import APPS
from bench.common import LineCounter, proc_status
from bench.load import LoadGenerator, resolve_loadgen
from bench.scenarios import SCENARIOS
from bench.server import Server

APP = "ours-sampled-100"
GOAL_PERCENT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory")
    group.add_argument("--memory-tasks", type=int, help="tasks in all (100000)")
    group.add_argument("--memory-warmup", type=int, help="tasks before the baseline (20000)")
    group.add_argument("--memory-chunk", type=int, help="requests per chunk (10000)")
    group.add_argument("--memory-app", default=APP, help="app of the throughput part")


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    total = opts.memory_tasks or (15_000 if opts.quick else 100_000)
    warmup = opts.memory_warmup or (10_000 if opts.quick else 20_000)
    chunk = opts.memory_chunk or (2_500 if opts.quick else 10_000)
    spec = APPS[opts.memory_app]
    kind = resolve_loadgen(opts.loadgen)
    load = LoadGenerator(kind, tmp)
    server = Server(spec, tmp / "server", keep_spans=False)
    started = time.monotonic()
    print(f"memory: {spec.name}, {total} tasks ({warmup} warm-up), chunks of {chunk}", flush=True)
    try:
        curve = load_in_chunks(server, load, total, warmup, chunk, opts.concurrency, started)
    finally:
        code, sink = server.stop()
    growth = (curve.end_kb - curve.baseline_kb) / curve.baseline_kb * 100
    print(
        f"  memory after {curve.tasks} tasks: {curve.end_kb / 1024:.1f} MB, growth {growth:+.1f}% "
        f"(peak {curve.peak_kb / 1024:.1f} MB)",
        flush=True,
    )
    return {
        "config": {
            "app": spec.name,
            "tasks": total,
            "warmup_tasks": warmup,
            "chunk_requests": chunk,
            "concurrency": opts.concurrency,
            "loadgen": kind,
            "goal_percent": GOAL_PERCENT,
        },
        "tasks": curve.tasks,
        "lines_written": curve.lines,
        "rejected": curve.rejected,
        "baseline_rss_mb": curve.baseline_kb / 1024,
        "end_rss_mb": curve.end_kb / 1024,
        "peak_rss_mb": curve.peak_kb / 1024,
        "growth_percent": growth,
        "seconds": time.monotonic() - started,
        "samples": curve.samples,
        "exit_code": code,
        "otlp_sink": sink,
    }


@dataclass
class Curve:
    """The server's RSS over the tasks done (kB; samples in MB, one per chunk)."""

    tasks: int
    rejected: int
    lines: int
    baseline_kb: int
    end_kb: int
    peak_kb: int
    samples: list[dict[str, float]]


def load_in_chunks(
    server: Server,
    load: LoadGenerator,
    total: int,
    warmup: int,
    chunk: int,
    concurrency: int,
    started: float,
) -> Curve:
    """Send ``total`` requests in chunks; after each chunk wait for every accepted task's line,
    then read the server's RSS (the first reading at or past ``warmup`` tasks: the baseline)."""
    scenario = SCENARIOS["send-notification"]
    samples: list[dict[str, float]] = []
    tasks = rejected = 0
    baseline_kb: int | None = None
    counter = LineCounter(server.log_txt)
    while tasks < total:
        result = load.run(server.port, scenario.path, min(chunk, total - tasks), concurrency)
        tasks += result.ok
        rejected += result.rejected
        if counter.wait_for(tasks, 120) is None:
            raise RuntimeError(f"memory: tasks did not finish ({counter.count()}/{tasks})")
        rss = proc_status(server.proc.pid, "VmRSS")
        samples.append(
            {"tasks": tasks, "rss_mb": rss / 1024, "seconds": time.monotonic() - started}
        )
        if baseline_kb is None and tasks >= warmup:
            baseline_kb = rss
            print(f"  memory after {tasks} tasks (warm-up): {rss / 1024:.1f} MB", flush=True)
    end_kb = proc_status(server.proc.pid, "VmRSS")
    peak_kb = proc_status(server.proc.pid, "VmHWM")
    lines = counter.count()
    if baseline_kb is None:
        raise RuntimeError("memory: fewer tasks than the warm-up")
    return Curve(tasks, rejected, lines, baseline_kb, end_kb, peak_kb, samples)


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    growth = part["growth_percent"]
    verdict = "met" if growth < cfg["goal_percent"] else "not met"
    curve = ", ".join(f"{s['tasks'] // 1000}k: {s['rss_mb']:.1f}" for s in part["samples"])
    return "\n".join(
        [
            "## Memory: RSS over many tasks",
            "",
            f"`{cfg['app']}` (everything on, spans exported), `POST /send-notification/{{email}}` "
            f"by `{cfg['loadgen']}` in chunks of {cfg['chunk_requests']} requests at concurrency "
            f"{cfg['concurrency']}; RSS read after each chunk's tasks all wrote their line. "
            f"Baseline after the first {cfg['warmup_tasks']} tasks (warm-up, fills the "
            "10000-entry task journal).",
            "",
            "| tasks | rejected | lines written | RSS after warm-up MB | RSS at end MB | "
            "growth | goal | peak RSS MB | seconds |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            f"| {part['tasks']} | {part['rejected']} | {part['lines_written']} | "
            f"{part['baseline_rss_mb']:.1f} | {part['end_rss_mb']:.1f} | {growth:+.1f}% | "
            f"< {cfg['goal_percent']:g}%: {verdict} | {part['peak_rss_mb']:.1f} | "
            f"{part['seconds']:.0f} |",
            "",
            f"RSS (MB) by tasks done: {curve}.",
            "",
        ]
    )


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    growth = part["growth_percent"]
    return [
        (
            f"RSS growth < {part['config']['goal_percent']:g}% over {part['tasks']} tasks "
            "after warm-up",
            f"{growth:+.1f}%",
            growth < part["config"]["goal_percent"],
        )
    ]
