"""The runner part's instruction counts: ``bench/runner_child.py --phase`` under
``valgrind --tool=callgrind``, per sampling rate, three phases (the same set-up, warm-up and
envelopes; then nothing, ``accepted()`` of N tasks, or that and their N runs). ``accepted()``
per task = (accepted - base) / N, a run = (run - accepted) / N: the difference of two programs
that do the same thing but those N calls, so start-up, imports and the envelopes cancel out.
User-space instructions only (system calls' kernel work is not counted), every thread of the
process (the batch span processor's included; the export helper is a process of its own, not
traced). Repeatable whatever else the machine does, unlike the µs tables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.apps import SAMPLED_10, SAMPLED_100
from bench.common import ROOT
from bench.otlp_sink import Sink

RATES: dict[str, dict[str, str]] = {"sampled-10": SAMPLED_10, "sampled-100": SAMPLED_100}
# issue 18, goal 3: instructions per run (``accepted()`` apart)
GOALS = {"sampled-10": 150_000, "sampled-100": 260_000}
PHASES = ("base", "accepted", "run")
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def available() -> bool:
    return shutil.which("valgrind") is not None


def measure(rates: list[str], tasks: int, warmup: int, workdir: Path) -> dict[str, Any]:
    """Instructions per task for each of ``rates`` (names in ``RATES``):
    ``{"sampled-10": {"accepted": .., "run": ..}, ...}``, with the raw totals; two valgrind
    processes at a time."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(rate, phase) for rate in rates for phase in PHASES]
    with _sinks(workdir, rates) as endpoints, ThreadPoolExecutor(2) as pool:
        totals = dict(
            zip(
                jobs,
                pool.map(
                    lambda j: _count(j[0], j[1], endpoints[j[0]], tasks, warmup, workdir), jobs
                ),
                strict=True,
            )
        )
    result: dict[str, Any] = {"tasks": tasks, "warmup": warmup}
    for rate in rates:
        base, accepted, run = (totals[(rate, phase)] for phase in PHASES)
        result[rate] = {
            "totals": {"base": base, "accepted": accepted, "run": run},
            "accepted": (accepted - base) / tasks,
            "run": (run - accepted) / tasks,
            "goal": GOALS[rate],
        }
    return result


class _sinks:
    """A local OTLP receiver per rate (the spans are exported as in the timed blocks)."""

    def __init__(self, workdir: Path, rates: list[str]) -> None:
        self.workdir, self.rates = workdir, rates
        self.sinks: dict[str, Sink] = {}

    def __enter__(self) -> dict[str, str]:
        for rate in self.rates:
            self.sinks[rate] = Sink(self.workdir / f"sink-{rate}", keep_bodies=False)
        return {rate: sink.endpoint for rate, sink in self.sinks.items()}

    def __exit__(self, *_: object) -> None:
        for sink in self.sinks.values():
            sink.stop()


def _count(rate: str, phase: str, endpoint: str, tasks: int, warmup: int, workdir: Path) -> int:
    """Instructions of one phase's program (all threads)."""
    out = workdir / f"callgrind.{rate}.{phase}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
    env |= RATES[rate] | {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_BSP_MAX_QUEUE_SIZE": str(max(2048, 2 * (tasks + warmup))),
    }
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.runner_child",
        "--iterations", str(tasks), "--warmup", str(warmup), "--phase", phase,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    match = _TOTALS.search(out.read_text()) if out.exists() else None
    if proc.returncode != 0 or match is None:
        raise RuntimeError(
            f"callgrind of the runner ({rate}, {phase}) failed: {proc.stderr[-3000:]}"
        )
    return int(match.group(1))


def rows(result: dict[str, Any]) -> Iterator[tuple[str, float, float, int]]:
    """(rate, accepted, run, goal) per rate measured."""
    for rate in RATES:
        if rate in result:
            r = result[rate]
            yield rate, r["accepted"], r["run"], r["goal"]


def markdown(result: dict[str, Any] | None) -> list[str]:
    """The instruction table (or why there is none)."""
    if result is None:
        return ["Instructions: not measured (`--micro-instructions 0`)."]
    if "skipped" in result:
        return [f"Instructions: not measured ({result['skipped']})."]
    return [
        f"Instructions per task (callgrind: {result['tasks']} tasks minus none, after "
        f"{result['warmup']} warm-up runs; every thread of the process; the run slot path, "
        "the request's context as parent; issue 18's goal for a run):",
        "",
        "| variant | `accepted()` | run | goal (run) | |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {rate} | {accepted / 1e3:.1f}k | **{run / 1e3:.1f}k** | <= {goal / 1e3:g}k | "
            f"{'met' if run <= goal else 'not met'} |"
            for rate, accepted, run, goal in rows(result)
        ),
    ]


def goals(result: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """A goal row per rate: measured, skipped (None) or not asked for (no row)."""
    if result is None:
        return []
    if "skipped" in result:
        return [
            (f"runner <= {g / 1e3:g}k instructions/run (`{r}`)", "not measured", None)
            for r, g in GOALS.items()
        ]
    return [
        (
            f"runner <= {goal / 1e3:g}k instructions/run (`{rate}`, callgrind)",
            f"{run / 1e3:.1f}k (`accepted()` {accepted / 1e3:.1f}k apart)",
            run <= goal,
        )
        for rate, accepted, run, goal in rows(result)
    ]
