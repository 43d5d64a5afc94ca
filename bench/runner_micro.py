"""Part ``runner``: the instrumented runner's own cost per task (micro-benchmark).

Each variant runs in a subprocess of its own, configured like the service: structlog JSON logs
(``observability.logs.configure_logging``) with file descriptor 1 sent to /dev/null (rendering
and writing the log lines of a run is part of the cost: its terminal event, with the default
settings), a ``TaskRunner`` with
``TaskMetrics(new_registry())``, a ``TaskJournal`` and a tracer provider from
``observability.tracing.create_tracer_provider`` (so the ``OTEL_*`` variables act as in the
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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvloop

from bench.common import ROOT, children, fmt, proc_cpu_seconds
from bench.otlp_sink import Sink

SAMPLED_10 = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
SAMPLED_100 = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
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
KINDS = (
    "sync_direct",
    "sync_hop",
    "sync_runner",
    "async_direct",
    "async_runner",
    "accepted",
)
GOAL_US = 25.0


# --------------------------------------------------------------------------- child


def noop(message: str) -> None:
    return None


async def anoop(message: str) -> None:
    return None


def children_cpu_ns() -> int:
    """CPU time of this process's live children (the span export helper)."""
    total = 0.0
    for child in children(os.getpid()):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += proc_cpu_seconds(child)
    return int(total * 1e9)


def _build_runner(executor_concurrency: int) -> tuple[Any, Any, Callable[[], Any]]:
    """(recorder, tracer provider, make_envelope), built as the service builds them."""
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from observability.logs.configuration import configure_logging
    from observability.metrics.registry import new_registry
    from observability.metrics.tasks import TaskMetrics
    from observability.tasks.envelope import TaskEnvelope
    from observability.tasks.journal import TaskJournal
    from observability.tasks.recorder import Recorder
    from observability.tracing.provider import create_tracer_provider

    configure_logging("json", "INFO")
    # as the service does: spans encoded and sent by the export helper process
    provider = create_tracer_provider("bench-runner", export_process=True)
    runner = Recorder(
        backend="inprocess",
        metrics=TaskMetrics(new_registry()),
        tracer_provider=provider,
        timeout=30.0,
        journal=TaskJournal(10_000),
        failure_sink=lambda report: None,
    )
    # parents: request spans, sampled per the same sampler (OTEL_TRACES_SAMPLER), not exported
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    parent_tracer = None if disabled else SdkTracerProvider().get_tracer("bench.request")

    def make_envelope() -> tuple[Any, Any]:
        """(envelope, the request's context): what a ``TaskCall`` hands an in-process run."""
        request: Any = contextlib.nullcontext()
        if parent_tracer is not None:
            request = parent_tracer.start_as_current_span("POST /send-notification/{email}")
        with request:
            envelope = TaskEnvelope(name="noop", args=("message to user@example.com\n",))
            return envelope, otel_context.get_current()

    return runner, provider, make_envelope


async def _measure(iterations: int, repeats: int, warmup: int) -> dict[str, Any]:
    from observability.tasks.execution import await_coroutine, call_in_thread

    runner, provider, make_envelope = _build_runner(8)
    flush: Callable[[], Any] = getattr(provider, "force_flush", lambda: True)
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(8, thread_name_prefix="task")
    runs = 0

    async def sync_direct(envs: list[Any]) -> None:
        for e, _ in envs:
            noop(*e.args, **e.kwargs)

    async def sync_hop(envs: list[Any]) -> None:
        for e, _ in envs:
            await loop.run_in_executor(executor, functools.partial(noop, *e.args, **e.kwargs))

    def run_slot(envs: list[Any]) -> None:  # what an in-process run slot thread does
        for e, parent in envs:
            call_in_thread(runner, e, noop, parent)

    async def sync_runner(envs: list[Any]) -> None:
        await loop.run_in_executor(executor, run_slot, envs)
        flush()

    async def async_direct(envs: list[Any]) -> None:
        for e, _ in envs:
            await anoop(*e.args, **e.kwargs)

    async def async_runner(envs: list[Any]) -> None:
        for e, parent in envs:
            await await_coroutine(runner, e, anoop, 30.0, parent)
        flush()

    async def accepted(envs: list[Any]) -> None:
        for e, _ in envs:
            runner.accepted(e)

    blocks: dict[str, Callable[[list[Any]], Awaitable[None]]] = {
        "sync_direct": sync_direct,
        "sync_hop": sync_hop,
        "sync_runner": sync_runner,
        "async_direct": async_direct,
        "async_runner": async_runner,
        "accepted": accepted,
    }

    async def timed(kind: str, envs: list[Any]) -> float:
        """Wall µs per task (and the process's CPU µs per task, all threads, into ``cpu``)."""
        nonlocal runs
        gc.collect()
        c0 = time.process_time_ns() + children_cpu_ns()
        t0 = time.perf_counter_ns()
        await blocks[kind](envs)
        elapsed = time.perf_counter_ns() - t0
        cpu[kind].append((time.process_time_ns() + children_cpu_ns() - c0) / len(envs) / 1e3)
        if kind.endswith("_runner"):
            runs += len(envs)
        return elapsed / len(envs) / 1e3

    def fresh(n: int) -> list[Any]:
        return [make_envelope() for _ in range(n)]

    cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
    # warm-up: imports, caches, labelled children, executor threads
    for kind in ("accepted", *KINDS):
        envs = fresh(warmup)
        if kind.endswith("_runner"):
            for e, _ in envs:
                runner.accepted(e)
        await timed(kind, envs)
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for samples in cpu.values():  # forget the warm-up
        samples.clear()
    for _ in range(repeats):
        sync_envs, async_envs = fresh(iterations), fresh(iterations)
        results["accepted"].append(await timed("accepted", sync_envs))
        for e, _ in async_envs:  # as in the service: every task that runs was accepted first
            runner.accepted(e)
        for kind in KINDS:
            if kind == "accepted":
                continue
            envs = async_envs if kind.startswith("async") else sync_envs
            results[kind].append(await timed(kind, envs))
    executor.shutdown()
    return {
        "loop": type(loop).__module__.split(".")[0],
        "iterations": iterations,
        "repeats": repeats,
        "runner_runs": runs,
        "us_per_task": results,
        "cpu_us_per_task": cpu,
    }


def child_main(args: argparse.Namespace) -> int:
    # JSON logs go to fd 1: send it to /dev/null (rendering and writing them is still paid)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        result = r.run(_measure(args.iterations, args.repeats, args.warmup))
    Path(args.out).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- harness side


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runner")
    group.add_argument("--micro-iterations", type=int, help="tasks per timed block (10000)")
    group.add_argument("--micro-repeats", type=int, help="repeats, median reported (5)")
    group.add_argument(
        "--micro-variants", default=",".join(VARIANTS), help="of: " + ", ".join(VARIANTS)
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
        sys.executable, "-m", "bench.runner_micro", "--child",
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
    }


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
        "| variant | sync: direct | sync: executor hop | sync: runner | overhead vs hop | "
        "**overhead vs direct** | async: direct | async: runner | **async overhead** | "
        "`accepted()` | spans exported/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in part["variants"].items():
        m, o = r["median_us"], r["overhead_us"]
        out.append(
            f"| {name} | {m['sync_direct']:.2f} | {m['sync_hop']:.1f} | {m['sync_runner']:.1f} | "
            f"{o['sync_runner_vs_hop']:.1f} | **{o['sync_runner_vs_direct']:.1f}** | "
            f"{m['async_direct']:.2f} | {m['async_runner']:.1f} | "
            f"**{o['async_runner_vs_direct']:.1f}** | {m['accepted']:.1f} | "
            f"{fmt(r.get('spans_exported_per_run'), '.2f')} |"
        )
    out += [
        "",
        "The same in CPU time of the process and of its span export helper (all threads: loop, "
        "executor, batch processor; `time.process_time` plus the helper's /proc ticks), which "
        "waiting for a busy machine's CPUs does not inflate:",
        "",
        "| variant | sync: direct | sync: executor hop | sync: runner | overhead vs hop | "
        "**overhead vs direct** | async: direct | async: runner | **async overhead** | "
        "`accepted()` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in part["variants"].items():
        if "cpu_median_us" not in r:
            continue
        m, o = r["cpu_median_us"], r["cpu_overhead_us"]
        out.append(
            f"| {name} | {m['sync_direct']:.2f} | {m['sync_hop']:.1f} | {m['sync_runner']:.1f} | "
            f"{o['sync_runner_vs_hop']:.1f} | **{o['sync_runner_vs_direct']:.1f}** | "
            f"{m['async_direct']:.2f} | {m['async_runner']:.1f} | "
            f"**{o['async_runner_vs_direct']:.1f}** | {m['accepted']:.1f} |"
        )
    out += [
        "",
        "The service runs a sync task in a run slot thread, in place (`run_in_thread`), with no "
        "per-task loop -> thread -> loop hop: *overhead vs direct* is what the instrumentation "
        "costs it. The tutorial's `BackgroundTasks` pay the hop per task (*executor hop*); "
        "*overhead vs hop* is shown for reference. `accepted()` is paid on the request path, "
        "once per task.",
    ]
    return "\n".join(out) + "\n"


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
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="runner micro-benchmark (child process)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--out", required=True)
    return child_main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
