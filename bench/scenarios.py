"""The throughput part's scenarios, and one scenario run against one server.

Scenarios: ``POST /send-notification/user@example.com`` (one task a request, the main row) and
``POST /advanced-notification/user@example.com?q=x`` (two tasks a request), each as fast as the
app answers, plus ``send-notification-paced``, the same load offered at fixed rates to every app
(one scenario per rate of ``--paced-rates``: ``send-notification-paced-200``, ...) so that its
latencies and CPU compare the apps at the same, ordinary load. For each app and scenario a fixed
number of requests is sent at fixed concurrency after a warm-up; then the harness waits until
every *accepted* request's tasks have written their lines to ``log.txt`` and checks the count is
exact.

Throughput is counted honestly: the service hands tasks to a bounded in-process backlog and
answers 503 fast when it is full, so ``req/s`` counts 2xx responses only (rejections are shown
apart), and ``tasks/s`` = accepted tasks / (first request .. last task line written), the
"goodput" of work actually done.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bench.common import LineCounter, NoiseMeter
from bench.load import LoadGenerator, LoadResult, python_load
from bench.server import Server

PRIMARY = "send-notification"
PACED = "send-notification-paced"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    tasks_per_request: int
    paced: bool = False  # offered load fixed (--paced-rates) instead of as fast as answered
    rate: float | None = None  # req/s offered (a paced scenario of one rate)


SCENARIOS = {
    "send-notification": Scenario("send-notification", "/send-notification/user@example.com", 1),
    "advanced-notification": Scenario(
        "advanced-notification", "/advanced-notification/user@example.com?q=x", 2
    ),
    # latency at the same load for every app (below each one's saturation)
    "send-notification-paced": Scenario(
        "send-notification-paced", "/send-notification/user@example.com", 1, paced=True
    ),
}


def paced_name(rate: float) -> str:
    """The paced scenario at one rate: ``send-notification-paced-400``."""
    return f"{PACED}-{rate:g}"


def selected(names: str, rates: list[float]) -> list[Scenario]:
    """The scenarios of ``--scenarios`` (comma-separated), the paced one once per rate."""
    result: list[Scenario] = []
    for name in (n for n in names.split(",") if n):
        scenario = SCENARIOS[name]
        if scenario.paced:
            result += [replace(scenario, name=paced_name(r), rate=r) for r in rates]
        else:
            result.append(scenario)
    return result


def paced_requests(seconds: float, rate: float) -> int:
    """Requests of a paced scenario: ``seconds`` of load at ``rate``."""
    return max(1, round(seconds * rate))


@dataclass
class ScenarioResult:
    app: str
    scenario: str
    round: int
    loadgen: str
    requests: int
    concurrency: int
    accepted: int  # 2xx responses
    rejected: int  # other statuses (503 when the backlog is full)
    errors: int
    tasks_expected: int
    lines_written: int
    lost: int
    ok_per_s: float  # 2xx responses / (first request .. last response)
    responses_per_s: float  # every response, rejected ones too
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    tasks_per_s: float  # accepted tasks / (first request .. last task line written)
    drain_lag_s: float  # last response .. last task line written
    server_cpu_us_per_request: float  # over the load and the drain, its helper's included
    helper_cpu_us_per_request: float  # of which the span export helper's
    sink_cpu_us_per_request: float
    other_load_cores: float  # the rest of the machine, busy (noise)
    stdout_bytes_per_request: float | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Drain:
    """What the server did for one scenario's load, up to its last task line."""

    tasks: int  # accepted tasks, each of which must write a line
    written: int  # task lines written
    done: float  # time.monotonic() of the last line (of giving up if they did not all come)
    cpu: float  # server CPU seconds over the load and the drain (with its export helper)
    helper_cpu: float  # of which the helper's
    sink_cpu: float  # the OTLP receiver's
    other: float  # the rest of the machine, busy (cores)
    stdout_bytes: int | None  # written to the server's stdout file (None: not a file)


def warm_up(
    server: Server, counter: LineCounter, scenarios: list[Scenario], opts: argparse.Namespace
) -> None:
    """Once per path: imports, caches, thread pools, connections; waits for the tasks, and for
    the span export helper to have started (its start-up is the warm-up's, not a scenario's)."""
    warm_lines = 0
    for scenario in {s.path: s for s in scenarios}.values():
        warm = python_load(server.port, scenario.path, opts.warmup, opts.concurrency)
        warm_lines += warm.ok * scenario.tasks_per_request
    if counter.wait_for(warm_lines, opts.drain_timeout) is None:
        raise RuntimeError(f"{server.spec.name}: warm-up tasks did not finish")
    if server.spec.otlp and server.spec.factory and not server.wait_for_export_helper(15.0):
        raise RuntimeError(f"{server.spec.name}: no span export helper after the warm-up")


def run_scenario(
    server: Server,
    counter: LineCounter,
    scenario: Scenario,
    opts: argparse.Namespace,
    round_no: int,
    load: LoadGenerator,
) -> ScenarioResult:
    before_lines = counter.count()
    before_cpu = server.cpu_seconds()
    before_own = server.own_cpu_seconds()
    before_sink = server.sink_cpu_seconds()
    before_stdout = server.stdout_bytes()
    noise = NoiseMeter()
    rate = scenario.rate
    requests = opts.requests if rate is None else paced_requests(opts.paced_seconds, rate)
    result = load.run(server.port, scenario.path, requests, opts.concurrency, rate)
    tasks = result.ok * scenario.tasks_per_request
    reached = counter.wait_for(before_lines + tasks, opts.drain_timeout)
    cpu = server.cpu_seconds() - before_cpu
    helper_cpu = cpu - (server.own_cpu_seconds() - before_own)
    sink_cpu = server.sink_cpu_seconds() - before_sink
    other = noise.other_cores(cpu + sink_cpu)
    time.sleep(0.3)  # anything extra would show up now
    lines = counter.count()
    after_stdout = server.stdout_bytes()
    drain = Drain(
        tasks=tasks,
        written=lines - before_lines,
        done=reached if reached is not None else time.monotonic(),
        cpu=cpu,
        helper_cpu=max(0.0, helper_cpu),
        sink_cpu=sink_cpu,
        other=other,
        stdout_bytes=(
            after_stdout - before_stdout
            if after_stdout is not None and before_stdout is not None
            else None
        ),
    )
    return scenario_result(
        server.spec.name,
        scenario.name,
        round_no,
        load.kind,
        requests,
        opts.concurrency,
        result,
        drain,
    )


def scenario_result(
    app: str,
    scenario: str,
    round_no: int,
    loadgen: str,
    requests: int,
    concurrency: int,
    result: LoadResult,
    drain: Drain,
) -> ScenarioResult:
    elapsed = result.end - result.start
    return ScenarioResult(
        app=app,
        scenario=scenario,
        round=round_no,
        loadgen=loadgen,
        requests=requests,
        concurrency=concurrency,
        accepted=result.ok,
        rejected=result.rejected,
        errors=result.errors,
        tasks_expected=drain.tasks,
        lines_written=drain.written,
        lost=drain.tasks - drain.written,
        ok_per_s=result.ok / elapsed,
        responses_per_s=(result.ok + result.rejected) / elapsed,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        max_ms=result.max_ms,
        tasks_per_s=drain.tasks / (drain.done - result.start),
        drain_lag_s=max(0.0, drain.done - result.end),
        server_cpu_us_per_request=drain.cpu / result.sent * 1e6,
        helper_cpu_us_per_request=drain.helper_cpu / result.sent * 1e6,
        sink_cpu_us_per_request=drain.sink_cpu / result.sent * 1e6,
        other_load_cores=drain.other,
        stdout_bytes_per_request=(
            drain.stdout_bytes / result.sent if drain.stdout_bytes is not None else None
        ),
    )
