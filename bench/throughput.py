"""Part ``throughput``: the service vs the bare tutorial app, side by side, alternating.

Each app of ``bench/apps.py`` is served by real uvicorn (``bench/server.py``) and given the
HTTP load of ``bench/scenarios.py``; each round starts every app afresh, in alternating order,
so that a slow drift of the machine weighs on every app alike. This module is the part itself
(options, rounds, one app's round); the summary of the runs is ``bench/summary.py``, the
Markdown and the goal rows ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.apps import APPS, BASELINE, DEFAULT_APPS, AppSpec
from bench.common import LineCounter, proc_status, selection
from bench.load import LoadGenerator, resolve_loadgen
from bench.report import goals, markdown
from bench.scenarios import SCENARIOS, Scenario, ScenarioResult, run_scenario, selected, warm_up
from bench.server import Server, uvicorn_options
from bench.summary import summarise

__all__ = ["add_arguments", "goals", "markdown", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("throughput")
    group.add_argument("--requests", type=int, help="per app, scenario and round (8000)")
    group.add_argument("--concurrency", type=int, default=32)
    group.add_argument("--rounds", type=int, help="rounds (pairs with tutorial) (3)")
    group.add_argument("--warmup", type=int, help="warm-up requests per scenario (500)")
    group.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    group.add_argument(
        "--apps", default=",".join(DEFAULT_APPS), help="comma-separated, of: " + ", ".join(APPS)
    )
    group.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS)
    )
    group.add_argument("--drain-timeout", type=float, default=120.0)
    group.add_argument(
        "--paced-rates",
        default="200,400,800",
        help="req/s offered in the paced scenario, one scenario per rate (comma-separated)",
    )
    group.add_argument(
        "--paced-seconds", type=float, help="seconds of load per paced rate (8; quick: 2)"
    )


def defaults(opts: argparse.Namespace) -> None:
    quick = opts.quick
    if opts.requests is None:
        opts.requests = 1500 if quick else 8000
    if opts.rounds is None:
        opts.rounds = 1 if quick else 3
    if opts.warmup is None:
        opts.warmup = 200 if quick else 500
    if opts.paced_seconds is None:
        opts.paced_seconds = 2.0 if quick else 8.0


def paced_rates(opts: argparse.Namespace) -> list[float]:
    """The rates of ``--paced-rates``."""
    rates = [float(r) for r in opts.paced_rates.split(",") if r.strip()]
    if not rates or min(rates) <= 0:
        raise RuntimeError(f"--paced-rates: positive req/s expected, got {opts.paced_rates!r}")
    return rates


def _progress(round_no: int, app: str, r: ScenarioResult) -> str:
    return (
        f"  round {round_no} {app:<21} {r.scenario:<22} "
        f"{r.ok_per_s:6.0f} 2xx/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
        f"{r.tasks_per_s:6.0f} tasks/s  lag {r.drain_lag_s:5.2f} s  "
        f"lines {r.lines_written}/{r.tasks_expected}  other load {r.other_load_cores:.2f}"
        + (f"  rejected {r.rejected}" if r.rejected else "")
        + (f"  errors {r.errors}" if r.errors else "")
    )


def run_app(
    spec: AppSpec,
    scenarios: list[Scenario],
    opts: argparse.Namespace,
    round_no: int,
    load: LoadGenerator,
    tmp: Path,
) -> tuple[list[ScenarioResult], dict[str, Any]]:
    """One app's round: a server of its own, warmed up, given every scenario, stopped."""
    server = Server(spec, Path(tempfile.mkdtemp(prefix=f"{spec.name}-r{round_no}-", dir=tmp)))
    results: list[ScenarioResult] = []
    peak_rss_kb = 0
    try:
        counter = LineCounter(server.log_txt)
        warm_up(server, counter, scenarios, opts)
        for scenario in scenarios:
            r = run_scenario(server, counter, scenario, opts, round_no, load)
            print(_progress(round_no, spec.name, r), flush=True)
            results.append(r)
        peak_rss_kb = proc_status(server.proc.pid, "VmHWM")
    finally:
        code, sink = server.stop()
    requests = sum(r.requests for r in results) + opts.warmup * len({s.path for s in scenarios})
    if sink.get("spans") is not None and results:
        sink["spans_per_request"] = sink["spans"] / requests
    return results, {
        "app": spec.name,
        "round": round_no,
        "command": server.command[2:],
        "peak_rss_kb": peak_rss_kb,
        "exit_code": code,
        "otlp_sink": sink,
    }


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    defaults(opts)
    apps = selection(opts.apps, APPS, BASELINE, "app(s)")
    scenarios = selected(opts.scenarios, paced_rates(opts))
    kind = resolve_loadgen(opts.loadgen)
    load = LoadGenerator(kind, tmp)
    print(
        f"throughput: load generator {kind}, {opts.requests} requests x {len(scenarios)} "
        f"scenarios x {len(apps)} apps x {opts.rounds} rounds, concurrency {opts.concurrency}; "
        f"paced: {opts.paced_seconds:g} s at each of {opts.paced_rates} req/s",
        flush=True,
    )
    runs: list[ScenarioResult] = []
    servers: list[dict[str, Any]] = []
    started = time.monotonic()
    for round_no in range(opts.rounds):
        order = apps if round_no % 2 == 0 else apps[::-1]
        ordered = scenarios if round_no % 2 == 0 else scenarios[::-1]
        for app in order:
            results, server_info = run_app(APPS[app], ordered, opts, round_no, load, tmp)
            runs += results
            servers.append(server_info)
    with contextlib.suppress(OSError):
        (tmp / "bench.lua").unlink()
    return {
        "config": config(opts, kind, apps, scenarios, time.monotonic() - started),
        "summary": summarise(runs, servers, apps, [s.name for s in scenarios]),
        "runs": [asdict(r) for r in runs],
        "servers": servers,
    }


def config(
    opts: argparse.Namespace, kind: str, apps: list[str], scenarios: list[Scenario], elapsed: float
) -> dict[str, Any]:
    """What was run, for the JSON and the report."""
    return {
        "loadgen": kind,
        "requests": opts.requests,
        "concurrency": opts.concurrency,
        "rounds": opts.rounds,
        "warmup": opts.warmup,
        "paced_rates": paced_rates(opts),
        "paced_seconds": opts.paced_seconds,
        "apps": apps,
        "app_env": {a: APPS[a].env for a in apps},
        "scenarios": {s.name: asdict(s) for s in scenarios},
        "uvicorn_options": uvicorn_options(),
        "elapsed_seconds": round(elapsed, 1),
    }
