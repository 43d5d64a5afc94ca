"""Part ``runner``: the instrumented runner's own cost per task (micro-benchmark).

Each variant runs in a subprocess of its own, configured like the service: structlog JSON logs
(``observability.logs.configuration.configure_logging``) with file descriptor 1 sent to
/dev/null (rendering and writing the log lines of a run is part of the cost: its terminal event,
with the default settings), a ``Recorder`` with ``TaskMetrics(new_registry())``, a
``TaskJournal`` and a tracer provider from
``observability.tracing.provider.create_tracer_provider`` (so the ``OTEL_*`` variables act as in the
service): spans sampled at 100% or 10% and exported by the batch processor over OTLP/HTTP to a
local receiver (``bench/otlp_sink.py``), or the SDK disabled (reference). The event loop is
uvloop's (as under uvicorn), the executor a ``ThreadPoolExecutor(8)`` (the service's default
concurrency). Envelopes are made beforehand, each under a request span of its own (a parent
sampled per the same sampler), as a request would make them; each run is given that request's
context as its parent, as the service's ``TaskCall`` gives it to an in-process run (so the trace
context the envelope carries for other processes is not parsed back).

Timed, one task after the other, ``--micro-iterations`` tasks per block, median over
``--micro-repeats`` repeats (blocks interleaved):

* sync no-op: direct call ``f(*args)``; bare executor hop
  ``await loop.run_in_executor(executor, f, *args)`` (what the tutorial's ``BackgroundTasks``
  pay per task, for reference); ``call_in_thread(recorder, envelope, f)`` in one executor thread,
  one task after the other, as the service's run slots do (no per-task hop);
* async no-op: direct ``await f(*args)``; ``await await_coroutine(recorder, envelope, f, timeout)``;
* ``recorder.accepted(envelope)``: the enqueue-side instrumentation (counter, journal entry,
  ``task.enqueued`` event, a DEBUG no-op by default), paid once per task on the request path.

Runner blocks end with ``force_flush()`` of the tracer provider inside the timed window, so the
export work their spans caused is charged to them (the batch queue is made large enough that no
span is dropped: ``OTEL_BSP_MAX_QUEUE_SIZE``).

Instructions (issue 18): the sync run path and ``accepted()`` are also counted under
callgrind (``bench/runner_callgrind.py``: ``--micro-instructions`` tasks, 0 skips), at 10% and
100% sampling (the variants asked for that have a sampling rate), with goal rows.

This module is the harness side (options, a variant's subprocess and its medians, the Markdown
and the goal rows); the subprocess, what it builds and times, is ``bench/runner_child.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import runner_callgrind
from bench.apps import SAMPLED_10, SAMPLED_100
from bench.common import ROOT, fmt
from bench.otlp_sink import Sink

VARIANTS: dict[str, tuple[dict[str, str], bool, str]] = {
    # name: (environment, export to a local OTLP receiver, description)
    "sampled-10": (SAMPLED_10, True, "spans sampled 10%, exported over OTLP/HTTP"),
    "sampled-100": (SAMPLED_100, True, "spans sampled 100%, exported over OTLP/HTTP"),
    "tracing-off": (
        {"OTEL_SDK_DISABLED": "true"},
        False,
        "reference: OTEL_SDK_DISABLED=true (no spans; metrics and logs only)",
    ),
}
GOAL_US = 25.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runner")
    group.add_argument("--micro-iterations", type=int, help="tasks per timed block (10000)")
    group.add_argument("--micro-repeats", type=int, help="repeats, median reported (5)")
    group.add_argument(
        "--micro-variants", default=",".join(VARIANTS), help="of: " + ", ".join(VARIANTS)
    )
    group.add_argument(
        "--micro-instructions",
        type=int,
        help="tasks counted under callgrind per sampled variant (2000; quick 300; 0: skip)",
    )


def run_variant(name: str, iterations: int, repeats: int, workdir: Path) -> dict[str, Any]:
    env_extra, export, _ = VARIANTS[name]
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
    env |= env_extra
    env["OTEL_BSP_MAX_QUEUE_SIZE"] = str(max(2048, 2 * iterations))
    sink = Sink(workdir / "sink") if export else None
    if sink is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = sink.endpoint
    out = workdir / "result.json"
    warmup = min(2000, iterations)
    cmd = [
        sys.executable, "-m", "bench.runner_child",
        "--iterations", str(iterations), "--repeats", str(repeats), "--warmup", str(warmup),
        "--out", str(out),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    finally:
        sink_stats = sink.stop() if sink is not None else {}
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"runner micro-benchmark {name} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    for prefix, key in (("", "us_per_task"), ("cpu_", "cpu_us_per_task")):
        m = {k: statistics.median(v) for k, v in result[key].items()}
        result[f"{prefix}median_us"] = m
        result[f"{prefix}overhead_us"] = {
            "sync_runner_vs_direct": m["sync_runner"] - m["sync_direct"],
            "sync_runner_vs_hop": m["sync_runner"] - m["sync_hop"],
            "async_runner_vs_direct": m["async_runner"] - m["async_direct"],
            "accepted": m["accepted"],
        }
    result["env"] = env_extra
    result["otlp_sink"] = sink_stats
    if "spans" in sink_stats and result["runner_runs"]:
        result["spans_exported_per_run"] = sink_stats["spans"] / result["runner_runs"]
    return result


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    iterations = opts.micro_iterations or (2000 if opts.quick else 10_000)
    repeats = opts.micro_repeats or (3 if opts.quick else 5)
    variants = [v for v in opts.micro_variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown runner variant {v!r}; known: {', '.join(VARIANTS)}")
    results = {}
    for name in variants:
        r = run_variant(name, iterations, repeats, tmp / name)
        o = r["overhead_us"]
        print(
            f"  runner {name:<12} sync: runner-direct {o['sync_runner_vs_direct']:6.1f} µs, "
            f"runner-hop {o['sync_runner_vs_hop']:6.1f} µs; "
            f"async: runner-direct {o['async_runner_vs_direct']:6.1f} µs; "
            f"accepted {o['accepted']:5.1f} µs",
            flush=True,
        )
        results[name] = r
    return {
        "config": {"iterations": iterations, "repeats": repeats, "goal_us": GOAL_US},
        "variants": results,
        "instructions": _instructions(opts, variants, tmp / "callgrind"),
    }


def _instructions(
    opts: argparse.Namespace, variants: list[str], workdir: Path
) -> dict[str, Any] | None:
    """The callgrind counts of the variants that have a sampling rate (None: not asked for)."""
    tasks = opts.micro_instructions
    if tasks is None:
        tasks = 300 if opts.quick else 2000
    rates = [v for v in variants if v in runner_callgrind.RATES]
    if tasks <= 0 or not rates:
        return None
    if not runner_callgrind.available():
        print("  runner instructions: skipped, valgrind is not installed", flush=True)
        return {"skipped": "valgrind is not installed"}
    result = runner_callgrind.measure(rates, tasks, min(500, tasks), workdir)
    for rate, accepted, run_, goal in runner_callgrind.rows(result):
        print(
            f"  runner {rate:<12} instructions: run {run_ / 1e3:.1f}k (goal <= {goal / 1e3:g}k), "
            f"accepted() {accepted / 1e3:.1f}k",
            flush=True,
        )
    return result


TABLE_HEAD = (
    "| variant | sync: direct | sync: executor hop | sync: runner | overhead vs hop | "
    "**overhead vs direct** | async: direct | async: runner | **async overhead** | "
    "`accepted()` |"
)


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    first: dict[str, Any] = next(iter(part["variants"].values()), {})
    out = [
        "## Runner micro-benchmark: per-task cost of the instrumentation",
        "",
        f"{cfg['iterations']} tasks per timed block, one after the other, median of "
        f"{cfg['repeats']} repeats, event loop `{first.get('loop', '?')}`, "
        "`ThreadPoolExecutor(8)`. Everything on, default settings: metrics, journal, the run's "
        "JSON log line rendered and written to /dev/null, span per run (export included: the "
        "provider is flushed inside the timed window). µs per task; *overhead* = runner minus the "
        f"uninstrumented way (goal: < {cfg['goal_us']:g} µs).",
        "",
        *(f"- `{name}`: {VARIANTS[name][2]}" for name in part["variants"]),
        "",
        *_wall_table(part["variants"]),
        "",
        "The same in CPU time of the process and of its span export helper (all threads: loop, "
        "executor, batch processor; `time.process_time` plus the helper's /proc ticks), which "
        "waiting for a busy machine's CPUs does not inflate:",
        "",
        *_cpu_table(part["variants"]),
        "",
        "The service runs a sync task in a run slot thread, in place (`run_in_thread`), with no "
        "per-task loop -> thread -> loop hop: *overhead vs direct* is what the instrumentation "
        "costs it. The tutorial's `BackgroundTasks` pay the hop per task (*executor hop*); "
        "*overhead vs hop* is shown for reference. `accepted()` is paid on the request path, "
        "once per task.",
        "",
        *runner_callgrind.markdown(part.get("instructions")),
    ]
    return "\n".join(out) + "\n"


def _row(name: str, m: dict[str, float], o: dict[str, float]) -> str:
    """A variant's cells of either table, up to its ``accepted()`` column."""
    return (
        f"| {name} | {m['sync_direct']:.2f} | {m['sync_hop']:.1f} | {m['sync_runner']:.1f} | "
        f"{o['sync_runner_vs_hop']:.1f} | **{o['sync_runner_vs_direct']:.1f}** | "
        f"{m['async_direct']:.2f} | {m['async_runner']:.1f} | "
        f"**{o['async_runner_vs_direct']:.1f}** | {m['accepted']:.1f} |"
    )


def _wall_table(variants: dict[str, Any]) -> list[str]:
    """Wall time per task, with the spans the receiver got per run."""
    out = [
        TABLE_HEAD + " spans exported/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in variants.items():
        spans = fmt(r.get("spans_exported_per_run"), ".2f")
        out.append(_row(name, r["median_us"], r["overhead_us"]) + f" {spans} |")
    return out


def _cpu_table(variants: dict[str, Any]) -> list[str]:
    """CPU time per task (variants measured before CPU times were kept are left out)."""
    out = [TABLE_HEAD, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in variants.items():
        if "cpu_median_us" in r:
            out.append(_row(name, r["cpu_median_us"], r["cpu_overhead_us"]))
    return out


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    for name, r in part["variants"].items():
        if not VARIANTS[name][1]:  # the reference without tracing is no goal
            continue
        o = r["overhead_us"]
        worst = max(o["sync_runner_vs_direct"], o["async_runner_vs_direct"])
        measured = f"{o['sync_runner_vs_direct']:.1f} / {o['async_runner_vs_direct']:.1f} µs"
        c = r.get("cpu_overhead_us")
        if c is not None:
            measured += (
                f" (CPU {c['sync_runner_vs_direct']:.1f} / {c['async_runner_vs_direct']:.1f} µs)"
            )
        rows.append(
            (
                f"runner overhead < {GOAL_US:g} µs/task (`{name}`; sync, async vs direct call)",
                measured,
                worst < GOAL_US,
            )
        )
    return rows + runner_callgrind.goals(part.get("instructions"))
