"""Part ``throughput``: the service vs the bare tutorial app, side by side, alternating.

Every app runs under real uvicorn, one process, ``--loop uvloop --http httptools
--log-level warning --no-access-log``, on a free 127.0.0.1 port, with its file sinks in a fresh
temporary ``NOTIFY_DATA_DIR``:

* ``tutorial``: the tutorial app (``bench/tutorial_app.py``, FastAPI ``BackgroundTasks``),
  uninstrumented: the baseline every ratio is taken against;
* ``ours-sampled-10`` / ``ours-sampled-100``: the service (``--factory
  service.main:create_app``) with everything on: HTTP and task metrics, JSON logs on stdout
  written to a file, spans sampled at 10% (``parentbased_traceidratio`` 0.1) or 100%
  (``parentbased_always_on``) and exported over OTLP/HTTP (batch processor) to a local receiver
  (``bench/otlp_sink.py``, one per server, a separate cheap process);
* ``tutorial-instrumented``: reference, the tutorial app with the usual FastAPI stack
  (prometheus-fastapi-instrumentator + opentelemetry-instrumentation-fastapi, no exporter).

Scenarios: ``POST /send-notification/user@example.com`` (one task a request, the main row) and
``POST /advanced-notification/user@example.com?q=x`` (two tasks a request). For each app and
scenario a fixed number of requests is sent at fixed concurrency after a warm-up; then the
harness waits until every *accepted* request's tasks have written their lines to ``log.txt`` and
checks the count is exact. Each round starts every app afresh, in alternating order; the ratios
are the median over rounds of the per-round ratio (app / tutorial of the same round).

Throughput is counted honestly: the service hands tasks to a bounded in-process backlog and
answers 503 fast when it is full, so ``req/s`` counts 2xx responses only (rejections are shown
apart), and ``tasks/s`` = accepted tasks / (first request .. last task line written), the
"goodput" of work actually done.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    ROOT,
    LineCounter,
    NoiseMeter,
    fmt,
    free_port,
    proc_cpu_seconds,
    proc_status,
    selection,
    wait_exit,
)
from bench.load import IDLE_PATH, LoadGenerator, python_load
from bench.otlp_sink import Sink

SAMPLED_10 = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
SAMPLED_100 = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
OURS = {"NOTIFY_LOG_FORMAT": "json"}


@dataclass(frozen=True)
class AppSpec:
    name: str
    target: str
    factory: bool
    env: dict[str, str]
    stdout: str  # "file" or "devnull"
    otlp: bool  # export spans to a local OTLP receiver of its own
    about: str


APPS = {
    spec.name: spec
    for spec in (
        AppSpec(
            "tutorial",
            "bench.tutorial_app:app",
            False,
            {},
            "file",
            False,
            "the tutorial app, uninstrumented (baseline)",
        ),
        AppSpec(
            "ours-sampled-10",
            "service.main:create_app",
            True,
            OURS | SAMPLED_10,
            "file",
            True,
            "the service, everything on, spans sampled 10% exported over OTLP/HTTP, "
            "JSON logs to a file",
        ),
        AppSpec(
            "ours-sampled-100",
            "service.main:create_app",
            True,
            OURS | SAMPLED_100,
            "file",
            True,
            "the same, spans sampled 100%",
        ),
        AppSpec(
            "tutorial-instrumented",
            "bench.tutorial_app:app",
            False,
            {"NOTIFY_BENCH_INSTRUMENTED": "1"},
            "file",
            False,
            "reference: the tutorial app with prometheus-fastapi-instrumentator and "
            "opentelemetry-instrumentation-fastapi (request spans, no exporter); tasks unobserved",
        ),
        # not run by default (--apps): where the cost goes
        AppSpec(
            "ours-noexport",
            "service.main:create_app",
            True,
            OURS | SAMPLED_100,
            "file",
            False,
            "the service, spans sampled 100% but not exported",
        ),
        AppSpec(
            "ours-notrace",
            "service.main:create_app",
            True,
            OURS | {"OTEL_SDK_DISABLED": "true"},
            "file",
            False,
            "the service with OTEL_SDK_DISABLED=true (no spans)",
        ),
        AppSpec(
            "ours-nologs",
            "service.main:create_app",
            True,
            OURS | SAMPLED_10 | {"NOTIFY_LOG_LEVEL": "WARNING"},
            "devnull",
            True,
            "the service sampled 10%, exported, INFO logs off",
        ),
    )
}
DEFAULT_APPS = ("tutorial", "ours-sampled-10", "ours-sampled-100", "tutorial-instrumented")
BASELINE = "tutorial"
# goals of issue 5 (2xx req/s ratio vs tutorial); p99 ratio goal for all of ours
GOALS = {"ours-sampled-10": 0.90, "ours-sampled-100": 0.75}
P99_GOAL = 1.3
PRIMARY = "send-notification"
PACED = "send-notification-paced"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    tasks_per_request: int
    paced: bool = False  # offered load fixed (--paced-rate) instead of as fast as answered


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


# --------------------------------------------------------------------------- server


def http_probe(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(f"GET {IDLE_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return s.recv(12).startswith(b"HTTP/1.1")
    except OSError:
        return False


def uvicorn_options() -> list[str]:
    """uvloop and httptools, explicitly: the fast stack for every app alike."""
    missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not installed: pip install 'uvicorn[standard]' "
            "(a dependency of this project: make .venv/bin/.installed)"
        )
    return ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]


def server_env(spec: AppSpec, data_dir: Path, endpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
    env.update(spec.env)
    env["NOTIFY_DATA_DIR"] = str(data_dir)
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    return env


class Server:
    """One app under uvicorn (and its OTLP receiver), processes of our own."""

    def __init__(self, spec: AppSpec, workdir: Path, keep_spans: bool = True) -> None:
        self.spec = spec
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True)
        self.stdout_path = workdir / "stdout.log" if spec.stdout == "file" else None
        self.stderr_path = workdir / "stderr.log"
        self.sink = Sink(workdir / "sink", keep_bodies=keep_spans) if spec.otlp else None
        self.port = free_port()
        env = server_env(spec, self.data_dir, self.sink.endpoint if self.sink else None)
        cmd = [sys.executable, "-m", "uvicorn", spec.target]
        if spec.factory:
            cmd.append("--factory")
        cmd += ["--host", HOST, "--port", str(self.port), *uvicorn_options()]
        self.command = cmd
        self._stdout = open(self.stdout_path or os.devnull, "wb")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._stdout, stderr=self._stderr
        )
        deadline = time.monotonic() + 60
        while not http_probe(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{spec.name} did not start: {self.stderr_path.read_text()[-2000:]}"
                )
            time.sleep(0.05)

    @property
    def log_txt(self) -> Path:
        return self.data_dir / "log.txt"

    def stdout_bytes(self) -> int | None:
        return self.stdout_path.stat().st_size if self.stdout_path else None

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def sink_cpu_seconds(self) -> float:
        return self.sink.cpu_seconds() if self.sink else 0.0

    def rss_kb(self) -> int:
        return proc_status(self.proc.pid, "VmRSS")

    def stop(self) -> tuple[int | None, dict[str, Any]]:
        """Stop the server (SIGTERM: its lifespan drains and flushes spans), then the sink."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = wait_exit(self.proc, 40)
        self._stdout.close()
        self._stderr.close()
        sink_stats = self.sink.stop() if self.sink else {}
        return code, sink_stats


# --------------------------------------------------------------------------- one run


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
    server_cpu_us_per_request: float  # over the load and the drain
    sink_cpu_us_per_request: float
    other_load_cores: float  # the rest of the machine, busy (noise)
    stdout_bytes_per_request: float | None
    extra: dict[str, Any] = field(default_factory=dict)


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
    before_sink = server.sink_cpu_seconds()
    before_stdout = server.stdout_bytes()
    noise = NoiseMeter()
    requests = opts.paced_requests if scenario.paced else opts.requests
    rate = opts.paced_rate if scenario.paced else None
    result = load.run(server.port, scenario.path, requests, opts.concurrency, rate)
    tasks = result.ok * scenario.tasks_per_request
    expected = before_lines + tasks
    reached = counter.wait_for(expected, opts.drain_timeout)
    cpu = server.cpu_seconds() - before_cpu
    sink_cpu = server.sink_cpu_seconds() - before_sink
    other = noise.other_cores(cpu + sink_cpu)
    time.sleep(0.3)  # anything extra would show up now
    lines = counter.count()
    after_stdout = server.stdout_bytes()
    written = lines - before_lines
    done = reached if reached is not None else time.monotonic()
    elapsed = result.end - result.start
    return ScenarioResult(
        app=server.spec.name,
        scenario=scenario.name,
        round=round_no,
        loadgen=load.kind,
        requests=requests,
        concurrency=opts.concurrency,
        accepted=result.ok,
        rejected=result.rejected,
        errors=result.errors,
        tasks_expected=tasks,
        lines_written=written,
        lost=tasks - written,
        ok_per_s=result.ok / elapsed,
        responses_per_s=(result.ok + result.rejected) / elapsed,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        max_ms=result.max_ms,
        tasks_per_s=tasks / (done - result.start),
        drain_lag_s=max(0.0, done - result.end),
        server_cpu_us_per_request=cpu / result.sent * 1e6,
        sink_cpu_us_per_request=sink_cpu / result.sent * 1e6,
        other_load_cores=other,
        stdout_bytes_per_request=(
            (after_stdout - before_stdout) / result.sent
            if after_stdout is not None and before_stdout is not None
            else None
        ),
    )


def run_app(
    spec: AppSpec,
    scenarios: list[Scenario],
    opts: argparse.Namespace,
    round_no: int,
    load: LoadGenerator,
    tmp: Path,
) -> tuple[list[ScenarioResult], dict[str, Any]]:
    server = Server(spec, Path(tempfile.mkdtemp(prefix=f"{spec.name}-r{round_no}-", dir=tmp)))
    results: list[ScenarioResult] = []
    peak_rss_kb = 0
    try:
        counter = LineCounter(server.log_txt)
        warm_lines = 0
        # warm-up (once per path): imports, caches, thread pools, connections
        for scenario in {s.path: s for s in scenarios}.values():
            warm = python_load(server.port, scenario.path, opts.warmup, opts.concurrency)
            warm_lines += warm.ok * scenario.tasks_per_request
        if counter.wait_for(warm_lines, opts.drain_timeout) is None:
            raise RuntimeError(f"{spec.name}: warm-up tasks did not finish")
        for scenario in scenarios:
            r = run_scenario(server, counter, scenario, opts, round_no, load)
            print(
                f"  round {round_no} {spec.name:<21} {scenario.name:<22} "
                f"{r.ok_per_s:6.0f} 2xx/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
                f"{r.tasks_per_s:6.0f} tasks/s  lag {r.drain_lag_s:5.2f} s  "
                f"lines {r.lines_written}/{r.tasks_expected}  other load {r.other_load_cores:.2f}"
                + (f"  rejected {r.rejected}" if r.rejected else "")
                + (f"  errors {r.errors}" if r.errors else ""),
                flush=True,
            )
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


# --------------------------------------------------------------------------- summary

METRICS = (
    "ok_per_s",
    "responses_per_s",
    "p50_ms",
    "p99_ms",
    "tasks_per_s",
    "drain_lag_s",
    "server_cpu_us_per_request",
    "sink_cpu_us_per_request",
    "other_load_cores",
    "stdout_bytes_per_request",
)
RATIO_METRICS = ("ok_per_s", "tasks_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(
    runs: list[ScenarioResult], servers: list[dict[str, Any]], apps: list[str]
) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for app in apps:
        mine_servers = [s for s in servers if s["app"] == app]
        entry: dict[str, Any] = {
            "peak_rss_mb": (median_of([s["peak_rss_kb"] for s in mine_servers]) or 0) / 1024,
            "spans_per_request": median_of(
                [s["otlp_sink"].get("spans_per_request") for s in mine_servers]
            ),
        }
        for scenario in SCENARIOS:
            mine = [r for r in runs if r.app == app and r.scenario == scenario]
            if not mine:
                continue
            per: dict[str, Any] = {m: median_of([getattr(r, m) for r in mine]) for m in METRICS}
            per["rejected"] = sum(r.rejected for r in mine)
            per["errors"] = sum(r.errors for r in mine)
            per["lost"] = sum(r.lost for r in mine)
            per["requests"] = sum(r.requests for r in mine)
            entry[scenario] = per
        medians[app] = entry
    # per-round pairs: app / tutorial of the same round, then the median over rounds
    ratios: dict[str, Any] = {}
    base = {(r.scenario, r.round): r for r in runs if r.app == BASELINE}
    for app in apps:
        if app == BASELINE:
            continue
        ratios[app] = {}
        for scenario in SCENARIOS:
            pairs = [
                (r, base[(scenario, r.round)])
                for r in runs
                if r.app == app and r.scenario == scenario and (scenario, r.round) in base
            ]
            if not pairs:
                continue
            ratios[app][scenario] = {
                m: median_of([getattr(a, m) / getattr(b, m) for a, b in pairs if getattr(b, m)])
                for m in RATIO_METRICS
            } | {"pairs": len(pairs)}
    return {"medians": medians, "ratios_vs_tutorial": ratios}


# --------------------------------------------------------------------------- report


def _goal(app: str, scenario: str, ratio: float | None) -> str:
    goal = GOALS.get(app)
    if goal is None or ratio is None or scenario != PRIMARY:
        return "-"
    return f">= {goal:.2f}: {'met' if ratio >= goal else 'not met'}"


def _p99_goal(app: str, scenario: str, ratio: float | None) -> str:
    if not app.startswith("ours") or ratio is None or scenario not in (PRIMARY, PACED):
        return "-"
    return f"<= {P99_GOAL}: {'met' if ratio <= P99_GOAL else 'not met'}"


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    medians = part["summary"]["medians"]
    ratios = part["summary"]["ratios_vs_tutorial"]
    out = [
        "## Throughput: the service vs the bare tutorial app",
        "",
        f"Load: `{cfg['loadgen']}`"
        + (" (1 thread)" if cfg["loadgen"] == "wrk" else "")
        + f", {cfg['concurrency']} connections, {cfg['requests']} requests per app, scenario "
        f"and round after {cfg['warmup']} warm-up requests; {cfg['rounds']} rounds, each app "
        "started afresh per round, order alternating. uvicorn: one process, "
        f"`{' '.join(cfg['uvicorn_options'])}`. Service settings: defaults "
        "(`NOTIFY_TASK_CONCURRENCY=8`, `NOTIFY_TASK_BACKLOG=10000`).",
        "",
        "Scenarios: `send-notification` (`POST /send-notification/user@example.com`, one task "
        "a request; the main row) and `advanced-notification` (`POST "
        "/advanced-notification/user@example.com?q=x`, two tasks) as fast as each app answers "
        "(closed loop: each app at its own saturation); `send-notification-paced`: "
        f"{cfg.get('paced_requests')} requests offered at about {cfg.get('paced_rate')} req/s to "
        "every app (each connection waits a jittered connections/rate before each request), "
        "so its latencies compare apps at the same load.",
        "",
        *(f"- `{app}`: {APPS[app].about}" for app in medians),
        "",
        "Columns: **2xx/s** = accepted (2xx) responses per second of the load; **rejected** = "
        "non-2xx responses (503: backlog full), summed over rounds; **tasks/s** = accepted tasks "
        "/ (first request .. last task line in `log.txt`), work actually done; **lag** = last "
        "response .. last task line; **CPU µs/req** = server process user+system CPU over load "
        "and drain / requests; **sink** = the OTLP receiver's CPU µs/req; **spans/req** = spans "
        "the receiver got per request; **other load** = CPU cores the rest of the machine was "
        "busy (noise: should be ~0). Medians over rounds.",
        "",
        "| app | scenario | 2xx/s | rejected | p50 ms | p99 ms | tasks/s | lag s | CPU µs/req | "
        "sink µs/req | spans/req | log B/req | lost | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for app, per_app in medians.items():
        for scenario in SCENARIOS:
            if scenario not in per_app:
                continue
            e = per_app[scenario]
            is_ours = APPS[app].factory
            out.append(
                f"| {app} | {scenario} | {fmt(e['ok_per_s'], '.0f')} | {e['rejected']} | "
                f"{fmt(e['p50_ms'], '.2f')} | {fmt(e['p99_ms'], '.2f')} | "
                f"{fmt(e['tasks_per_s'], '.0f')} | {fmt(e['drain_lag_s'], '.2f')} | "
                f"{fmt(e['server_cpu_us_per_request'], '.0f')} | "
                f"{fmt(e['sink_cpu_us_per_request'], '.0f') if APPS[app].otlp else '-'} | "
                f"{fmt(per_app['spans_per_request'], '.2f') if APPS[app].otlp else '-'} | "
                f"{fmt(e['stdout_bytes_per_request'], '.0f') if is_ours else '-'} | "
                f"{e['lost']} | {fmt(e['other_load_cores'], '.2f')} |"
            )
    out += [
        "",
        "Ratios to `tutorial`, median over rounds of the per-round pair (app / tutorial of the "
        "same round). **req/s** = 2xx/s ratio (the issue's throughput goal, on "
        f"`{PRIMARY}`); **goodput** = tasks/s ratio; latency and CPU: lower is better.",
        "",
        "| app | scenario | req/s (2xx) | goal | goodput (tasks/s) | p50 | p99 | p99 goal | "
        "CPU/req | pairs |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for app, per_app in ratios.items():
        for scenario in SCENARIOS:
            if scenario not in per_app:
                continue
            x = per_app[scenario]
            out.append(
                f"| {app} | {scenario} | {fmt(x['ok_per_s'], '.2f')} | "
                f"{_goal(app, scenario, x['ok_per_s'])} | {fmt(x['tasks_per_s'], '.2f')} | "
                f"{fmt(x['p50_ms'], '.2f')} | {fmt(x['p99_ms'], '.2f')} | "
                f"{_p99_goal(app, scenario, x['p99_ms'])} | "
                f"{fmt(x['server_cpu_us_per_request'], '.2f')} | {x['pairs']} |"
            )
    out += ["", "| app | peak RSS (VmHWM) MB |", "|---|---:|"]
    out += [f"| {app} | {per_app['peak_rss_mb']:.1f} |" for app, per_app in medians.items()]
    lost = [r for r in part["runs"] if r["lost"]]
    if lost:
        out += ["", f"**{len(lost)} run(s) lost task lines** (see `runs` in the JSON)."]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- part


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
        "--paced-rate", type=float, default=200.0, help="req/s offered in the paced scenario"
    )
    group.add_argument("--paced-requests", type=int, help="requests of the paced scenario (2000)")


def defaults(opts: argparse.Namespace) -> None:
    quick = opts.quick
    if opts.requests is None:
        opts.requests = 1500 if quick else 8000
    if opts.rounds is None:
        opts.rounds = 1 if quick else 3
    if opts.warmup is None:
        opts.warmup = 200 if quick else 500
    if opts.paced_requests is None:
        opts.paced_requests = 600 if quick else 2000


def resolve_loadgen(kind: str) -> str:
    import shutil

    if kind == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return kind


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    defaults(opts)
    apps = selection(opts.apps, APPS, BASELINE, "app(s)")
    scenarios = [SCENARIOS[s] for s in opts.scenarios.split(",") if s]
    kind = resolve_loadgen(opts.loadgen)
    load = LoadGenerator(kind, tmp)
    print(
        f"throughput: load generator {kind}, {opts.requests} requests x {len(scenarios)} "
        f"scenarios x {len(apps)} apps x {opts.rounds} rounds, concurrency {opts.concurrency}",
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
        "config": {
            "loadgen": kind,
            "requests": opts.requests,
            "concurrency": opts.concurrency,
            "rounds": opts.rounds,
            "warmup": opts.warmup,
            "paced_rate": opts.paced_rate,
            "paced_requests": opts.paced_requests,
            "apps": apps,
            "app_env": {a: APPS[a].env for a in apps},
            "scenarios": {s.name: asdict(s) for s in scenarios},
            "uvicorn_options": uvicorn_options(),
            "elapsed_seconds": round(time.monotonic() - started, 1),
        },
        "summary": summarise(runs, servers, apps),
        "runs": [asdict(r) for r in runs],
        "servers": servers,
    }


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows for the summary table."""
    rows: list[tuple[str, str, bool | None]] = []
    ratios = part["summary"]["ratios_vs_tutorial"]
    for app, goal in GOALS.items():
        x = ratios.get(app, {}).get(PRIMARY)
        if x is None:
            continue
        r, p99 = x["ok_per_s"], x["p99_ms"]
        rows.append(
            (
                f"`{app}`: 2xx req/s >= {goal:.2f} of `tutorial` (`{PRIMARY}`)",
                f"{fmt(r, '.2f')} (goodput {fmt(x['tasks_per_s'], '.2f')})",
                None if r is None else r >= goal,
            )
        )
        rows.append(
            (
                f"`{app}`: p99 <= {P99_GOAL}x `tutorial`'s (`{PRIMARY}`, each at its own "
                "saturation)",
                fmt(p99, ".2f"),
                None if p99 is None else p99 <= P99_GOAL,
            )
        )
        paced = ratios.get(app, {}).get(PACED)
        if paced is not None:
            p99 = paced["p99_ms"]
            rate = part["config"].get("paced_rate")
            rows.append(
                (
                    f"`{app}`: p99 <= {P99_GOAL}x `tutorial`'s at the same load (`{PACED}`, "
                    f"~{rate:g} req/s)",
                    fmt(p99, ".2f"),
                    None if p99 is None else p99 <= P99_GOAL,
                )
            )
    return rows
