"""The child process of the runner part: one variant's timed blocks, results as JSON to a file.

``bench/runner_micro.py`` starts it once per variant, with the variant's ``OTEL_*`` variables,
so that each variant gets a process, a tracer provider and a span export helper of its own; its
docstring says what is timed and how. The child sends its stdout (the JSON logs) to /dev/null,
so rendering and writing the log lines is paid, as in the service, and nothing is shown.

    python -m bench.runner_child --iterations 5000 --repeats 1 --out /tmp/r.json

With ``--phase`` it times nothing: it is the program ``bench/runner_callgrind.py`` runs under
callgrind, once per phase, whose instruction counts it subtracts (``count``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvloop

from bench.common import children, proc_cpu_seconds

KINDS = (
    "sync_direct",
    "sync_hop",
    "sync_runner",
    "async_direct",
    "async_runner",
    "accepted",
)
Block = Callable[[list[Any]], Awaitable[None]]


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


def _blocks(
    runner: Any, flush: Callable[[], Any], loop: asyncio.AbstractEventLoop, executor: Any
) -> dict[str, Block]:
    """The timed blocks by kind: each runs its tasks (``(envelope, parent)`` pairs) one after
    the other; the runner's blocks end with the provider's flush, so their export is charged."""
    from observability.tasks.execution import await_coroutine, call_in_thread

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

    return {
        "sync_direct": sync_direct,
        "sync_hop": sync_hop,
        "sync_runner": sync_runner,
        "async_direct": async_direct,
        "async_runner": async_runner,
        "accepted": accepted,
    }


class Timer:
    """Runs a block and returns its wall µs per task; keeps its CPU µs per task (this process,
    all threads, and its children) in ``cpu`` and counts the runner's runs in ``runs``."""

    def __init__(self, blocks: dict[str, Block]) -> None:
        self.blocks = blocks
        self.cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.runs = 0

    async def __call__(self, kind: str, envs: list[Any]) -> float:
        gc.collect()
        c0 = time.process_time_ns() + children_cpu_ns()
        t0 = time.perf_counter_ns()
        await self.blocks[kind](envs)
        elapsed = time.perf_counter_ns() - t0
        self.cpu[kind].append((time.process_time_ns() + children_cpu_ns() - c0) / len(envs) / 1e3)
        if kind.endswith("_runner"):
            self.runs += len(envs)
        return elapsed / len(envs) / 1e3


async def _warm_up(timed: Timer, runner: Any, fresh: Callable[[int], list[Any]], n: int) -> None:
    """Every block once (imports, caches, labelled children, executor threads); the CPU
    samples are then forgotten (the runs stay counted)."""
    for kind in ("accepted", *KINDS):
        envs = fresh(n)
        if kind.endswith("_runner"):
            for e, _ in envs:
                runner.accepted(e)
        await timed(kind, envs)
    for samples in timed.cpu.values():
        samples.clear()


async def _repeat(
    timed: Timer, runner: Any, fresh: Callable[[int], list[Any]], iterations: int, repeats: int
) -> dict[str, list[float]]:
    """``repeats`` times every block on fresh envelopes (blocks interleaved); wall µs per task
    by kind, one sample a repeat."""
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
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
    return results


async def _measure(iterations: int, repeats: int, warmup: int) -> dict[str, Any]:
    runner, provider, make_envelope = _build_runner(8)
    flush: Callable[[], Any] = getattr(provider, "force_flush", lambda: True)
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(8, thread_name_prefix="task")
    timed = Timer(_blocks(runner, flush, loop, executor))

    def fresh(n: int) -> list[Any]:
        return [make_envelope() for _ in range(n)]

    await _warm_up(timed, runner, fresh, warmup)
    results = await _repeat(timed, runner, fresh, iterations, repeats)
    executor.shutdown()
    return {
        "loop": type(loop).__module__.split(".")[0],
        "iterations": iterations,
        "repeats": repeats,
        "runner_runs": timed.runs,
        "us_per_task": results,
        "cpu_us_per_task": timed.cpu,
    }


PHASES = ("base", "accepted", "run")


def count(phase: str, tasks: int, warmup: int) -> None:
    """What callgrind counts: the recorder built, ``warmup`` tasks accepted and run, ``tasks``
    envelopes made (each under its request span), then per ``phase`` nothing more (``base``),
    ``accepted()`` of each (``accepted``), or that and their runs, one after the other in one
    thread as a run slot runs them (``run``); the provider flushed last. Ids come from a seeded
    generator, so every phase samples the same runs."""
    from observability.tasks.execution import call_in_thread

    random.seed(18)  # the SDK's ids (and so the sampler's decisions) come from ``random``
    runner, provider, make_envelope = _build_runner(8)

    def slot(envs: list[Any]) -> None:
        for e, parent in envs:
            call_in_thread(runner, e, noop, parent)

    def run_slot(envs: list[Any]) -> None:
        thread = threading.Thread(target=slot, args=(envs,), name="task-slot-0")
        thread.start()
        thread.join()

    warm = [make_envelope() for _ in range(warmup)]
    for e, _ in warm:
        runner.accepted(e)
    run_slot(warm)
    envs = [make_envelope() for _ in range(tasks)]
    gc.collect()  # every phase starts what differs with the same collector state
    if phase != "base":
        for e, _ in envs:
            runner.accepted(e)
    run_slot(envs if phase == "run" else [])
    getattr(provider, "force_flush", lambda: True)()
    getattr(provider, "shutdown", lambda: None)()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="runner micro-benchmark (child process)")
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--out", help="results file (the timed blocks)")
    parser.add_argument("--phase", choices=PHASES, help="count instead: see ``count``")
    args = parser.parse_args(argv)
    # JSON logs go to fd 1: send it to /dev/null (rendering and writing them is still paid)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    if args.phase is not None:
        count(args.phase, args.iterations, args.warmup)
        return 0
    if args.out is None:
        parser.error("--out is required unless --phase is given")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        result = r.run(_measure(args.iterations, args.repeats, args.warmup))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
