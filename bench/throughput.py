"""Throughput of the service vs the tutorial app, bare and instrumented (``make bench``).

Every app runs under real uvicorn (one worker, ``--log-level warning``) on a free
127.0.0.1 port, with its file sinks in a fresh temporary ``NOTIFY_DATA_DIR``:

* ``tutorial``     the tutorial app (``bench/tutorial_app.py``, FastAPI ``BackgroundTasks``),
                   uninstrumented;
* ``tutorial-instrumented`` the same app with the usual FastAPI observability stack, which does
                   not observe background tasks: prometheus-fastapi-instrumentator (HTTP metrics,
                   ``/metrics``) and opentelemetry-instrumentation-fastapi (request spans, SDK
                   ``TracerProvider`` without exporter); no access log, as for ``tutorial``
                   (``NOTIFY_BENCH_INSTRUMENTED=1``, see ``bench/tutorial_app.py``);
* ``ours``         the service (``--factory service.main:create_app``), ``NOTIFY_LOG_FORMAT=json``,
                   its JSON logs on stdout redirected to a file (writing them is part of the cost);
* ``ours-devnull`` the same with its stdout sent to /dev/null (not run by default: it measured
                   the same as ``ours``).

For each app and scenario (``POST /send-notification/user@example.com``: one task a request;
``POST /advanced-notification/user@example.com?q=x``: two tasks a request) a fixed number of
requests is sent at fixed concurrency, after a warm-up. Then the benchmark waits until every
accepted request's tasks have written their lines to ``log.txt`` and checks that the count is
exact (nothing lost, nothing extra). Rounds alternate the order of apps and scenarios; the
reported figure is the median over the rounds.

The load generator is ``wrk`` when it is on PATH (a Lua script makes it stop after exactly N
requests), else a built-in asyncio one (``--loadgen`` chooses). Results go to
``bench/results/latest.json`` and ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
IDLE_PATH = "/__bench_idle"  # 404 in every app, runs no task


@dataclass(frozen=True)
class AppSpec:
    name: str
    target: str
    factory: bool
    env: dict[str, str]
    stdout: str  # "file" or "devnull"


APPS = {
    "tutorial": AppSpec("tutorial", "bench.tutorial_app:app", False, {}, "file"),
    "tutorial-instrumented": AppSpec(
        "tutorial-instrumented",
        "bench.tutorial_app:app",
        False,
        {"NOTIFY_BENCH_INSTRUMENTED": "1"},
        "file",
    ),
    "ours": AppSpec("ours", "service.main:create_app", True, {"NOTIFY_LOG_FORMAT": "json"}, "file"),
    # not run by default (--apps): ours-devnull measured the same as ours; where the cost goes
    "ours-devnull": AppSpec(
        "ours-devnull", "service.main:create_app", True, {"NOTIFY_LOG_FORMAT": "json"}, "devnull"
    ),
    "ours-notrace": AppSpec(
        "ours-notrace",
        "service.main:create_app",
        True,
        {"NOTIFY_LOG_FORMAT": "json", "OTEL_SDK_DISABLED": "true"},
        "devnull",
    ),
    "ours-nologs": AppSpec(
        "ours-nologs",
        "service.main:create_app",
        True,
        {"NOTIFY_LOG_FORMAT": "json", "NOTIFY_LOG_LEVEL": "WARNING"},
        "devnull",
    ),
}
DEFAULT_APPS = ("tutorial", "tutorial-instrumented", "ours")
# ratio tables: every other app / baseline (for the instrumented baseline, only the service)
BASELINES = ("tutorial", "tutorial-instrumented")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    tasks_per_request: int


SCENARIOS = {
    "send-notification": Scenario("send-notification", "/send-notification/user@example.com", 1),
    "advanced-notification": Scenario(
        "advanced-notification", "/advanced-notification/user@example.com?q=x", 2
    ),
}


@dataclass
class LoadResult:
    """What the load generator saw."""

    sent: int
    ok: int  # 2xx: accepted
    rejected: int  # any other HTTP status (e.g. 503 backlog_full)
    errors: int  # socket errors / timeouts
    start: float  # time.monotonic() of the first request
    end: float  # time.monotonic() of the last response
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- load: asyncio


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _python_load(port: int, path: str, requests: int, concurrency: int) -> LoadResult:
    request = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: 0\r\n\r\n").encode()
    remaining = requests
    latencies: list[int] = []
    statuses: Counter[int] = Counter()
    errors = 0
    last = 0.0

    async def connection() -> None:
        nonlocal remaining, errors, last
        reader = writer = None
        while remaining > 0:
            remaining -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                t0 = time.perf_counter_ns()
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), 30)
                latencies.append(time.perf_counter_ns() - t0)
                last = time.monotonic()
                statuses[status] += 1
                if close:
                    writer.close()
                    reader = writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    latencies.sort()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1e6

    return LoadResult(
        sent=requests,
        ok=ok,
        rejected=sum(statuses.values()) - ok,
        errors=errors,
        start=start,
        end=last or time.monotonic(),
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=latencies[-1] / 1e6 if latencies else float("nan"),
        mean_ms=statistics.fmean(latencies) / 1e6 if latencies else float("nan"),
        statuses={str(s): n for s, n in sorted(statuses.items())},
    )


def python_load(port: int, path: str, requests: int, concurrency: int) -> LoadResult:
    return asyncio.run(_python_load(port, path, requests, concurrency))


# --------------------------------------------------------------------------- load: wrk

# wrk runs for a fixed duration; this script makes it count: the thread sends exactly
# BENCH_QUOTA requests to BENCH_PATH (afterwards only GETs to a 404 path that runs no task,
# until the last real response is in), then stops and says so, and the driver interrupts wrk.
# Times are CLOCK_MONOTONIC, the same clock as Python's time.monotonic().
WRK_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local quota = tonumber(os.getenv("BENCH_QUOTA"))
local path = os.getenv("BENCH_PATH")
local idle_path = os.getenv("BENCH_IDLE_PATH")
local real_req, idle_req
sent, n_done, ok, rejected, t_start, t_end = 0, 0, 0, 0, 0, 0

function init(args)
  real_req = wrk.format("POST", path, {["Content-Length"] = "0"}, nil)
  idle_req = wrk.format("GET", idle_path)
end

-- wrk calls request() once before the run to check it (thread 0 only: run with -t1)
local checked = false

function request()
  if not checked then
    checked = true
    return real_req
  end
  if sent < quota then
    if sent == 0 then t_start = now() end
    sent = sent + 1
    return real_req
  end
  return idle_req
end

function response(status, headers, body)
  if status == 404 then return end
  n_done = n_done + 1
  if status >= 200 and status < 300 then ok = ok + 1 else rejected = rejected + 1 end
  if n_done == quota then
    t_end = now()
    io.write("BENCH_STOP\n")
    io.flush()
    wrk.thread:stop()
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local s, d, o, r, t0, t1 = 0, 0, 0, 0, math.huge, 0
  for _, t in ipairs(threads) do
    s = s + t:get("sent"); d = d + t:get("n_done"); o = o + t:get("ok")
    r = r + t:get("rejected")
    t0 = math.min(t0, t:get("t_start")); t1 = math.max(t1, t:get("t_end"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"sent":%d,"done":%d,"ok":%d,"rejected":%d,"start":%.6f,"end":%.6f,' ..
    '"all_requests":%d,"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f}\n',
    s, d, o, r, t0, t1, summary.requests, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def wrk_load(
    port: int, path: str, requests: int, concurrency: int, script: Path, cap_seconds: int
) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_QUOTA": str(requests),
        "BENCH_PATH": path,
        "BENCH_IDLE_PATH": IDLE_PATH,
    }
    # One wrk thread: it leaves the other core to the server (wrk is far cheaper per request).
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{cap_seconds}s", "--timeout", "30s",
        "-s", str(script), f"http://{HOST}:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    payload = None
    for line in proc.stdout:
        if line.startswith("BENCH_STOP"):
            proc.send_signal(signal.SIGINT)
        elif line.startswith("BENCH_JSON "):
            payload = json.loads(line[len("BENCH_JSON ") :])
    proc.wait(timeout=30)
    if payload is None:
        raise RuntimeError(f"wrk gave no result: {proc.stderr.read() if proc.stderr else ''}")
    if payload["done"] != requests:
        raise RuntimeError(f"wrk stopped early (cap {cap_seconds}s?): {payload}")
    return LoadResult(
        sent=payload["sent"],
        ok=payload["ok"],
        rejected=payload["rejected"],
        errors=payload["errors"],
        start=payload["start"],
        end=payload["end"],
        # wrk's latency covers every request, including the few idle 404s after the quota
        p50_ms=payload["p50_us"] / 1e3,
        p90_ms=payload["p90_us"] / 1e3,
        p99_ms=payload["p99_us"] / 1e3,
        max_ms=payload["max_us"] / 1e3,
        mean_ms=payload["mean_us"] / 1e3,
        statuses={"2xx": payload["ok"], "other": payload["rejected"]},
    )


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_probe(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(f"GET {IDLE_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return s.recv(12).startswith(b"HTTP/1.1")
    except OSError:
        return False


class Server:
    def __init__(self, spec: AppSpec, workdir: Path) -> None:
        self.spec = spec
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True)
        self.stdout_path = workdir / "stdout.log" if spec.stdout == "file" else None
        self.stderr_path = workdir / "stderr.log"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
        env.update(spec.env)
        env["NOTIFY_DATA_DIR"] = str(self.data_dir)
        env["PYTHONUNBUFFERED"] = "0"
        cmd = [sys.executable, "-m", "uvicorn", spec.target]
        if spec.factory:
            cmd.append("--factory")
        cmd += ["--host", HOST, "--port", str(self.port), "--log-level", "warning"]
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

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stdout.close()
        self._stderr.close()
        return self.proc.returncode


class LineCounter:
    """Counts newline-terminated lines of a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        # only whole lines: a half-written line is counted once its newline is there
        end = chunk.rfind(b"\n") + 1
        self.lines += chunk.count(b"\n", 0, end)
        self.offset += end
        return self.lines

    def wait_for(self, expected: int, timeout: float) -> float | None:
        """Poll until ``expected`` lines; the monotonic time they were there, or None."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            now = time.monotonic()
            if n >= expected:
                return now
            if now > deadline:
                return None
            time.sleep(0.002)


# --------------------------------------------------------------------------- one run


@dataclass
class ScenarioResult:
    app: str
    scenario: str
    round: int
    loadgen: str
    requests: int
    concurrency: int
    accepted: int
    rejected: int
    errors: int
    tasks_expected: int
    lines_written: int
    lost: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    tasks_per_s: float  # tasks / (first request .. last task line written)
    drain_lag_s: float  # last response .. last task line written
    server_cpu_us_per_request: float
    stdout_bytes_per_request: float | None


def run_scenario(
    server: Server,
    counter: LineCounter,
    scenario: Scenario,
    args: argparse.Namespace,
    round_no: int,
    wrk_script: Path | None,
) -> ScenarioResult:
    before_lines = counter.count()
    before_cpu = proc_cpu_seconds(server.proc.pid)
    before_stdout = server.stdout_bytes()
    if wrk_script is not None:
        load = wrk_load(
            server.port,
            scenario.path,
            args.requests,
            args.concurrency,
            wrk_script,
            max(120, args.requests // 50),
        )
    else:
        load = python_load(server.port, scenario.path, args.requests, args.concurrency)
    expected = before_lines + load.ok * scenario.tasks_per_request
    reached = counter.wait_for(expected, args.drain_timeout)
    time.sleep(0.3)  # anything extra would show up now
    lines = counter.count()
    cpu = proc_cpu_seconds(server.proc.pid) - before_cpu
    after_stdout = server.stdout_bytes()
    written = lines - before_lines
    tasks = load.ok * scenario.tasks_per_request
    end_to_end = (reached if reached is not None else time.monotonic()) - load.start
    return ScenarioResult(
        app=server.spec.name,
        scenario=scenario.name,
        round=round_no,
        loadgen="wrk" if wrk_script is not None else "python",
        requests=args.requests,
        concurrency=args.concurrency,
        accepted=load.ok,
        rejected=load.rejected,
        errors=load.errors,
        tasks_expected=tasks,
        lines_written=written,
        lost=tasks - written,
        requests_per_s=load.sent / (load.end - load.start),
        p50_ms=load.p50_ms,
        p90_ms=load.p90_ms,
        p99_ms=load.p99_ms,
        max_ms=load.max_ms,
        tasks_per_s=tasks / end_to_end,
        drain_lag_s=max(0.0, (reached or time.monotonic()) - load.end),
        server_cpu_us_per_request=cpu / load.sent * 1e6,
        stdout_bytes_per_request=(
            (after_stdout - before_stdout) / load.sent
            if after_stdout is not None and before_stdout is not None
            else None
        ),
    )


def run_app(
    spec: AppSpec,
    scenarios: list[Scenario],
    args: argparse.Namespace,
    round_no: int,
    wrk_script: Path | None,
    tmp: Path,
) -> tuple[list[ScenarioResult], dict[str, Any]]:
    server = Server(spec, Path(tempfile.mkdtemp(prefix=f"{spec.name}-r{round_no}-", dir=tmp)))
    try:
        counter = LineCounter(server.log_txt)
        warm_lines = 0
        for scenario in scenarios:  # warm-up: imports, caches, thread pools, connections
            warm = python_load(server.port, scenario.path, args.warmup, args.concurrency)
            warm_lines += warm.ok * scenario.tasks_per_request
        if counter.wait_for(warm_lines, args.drain_timeout) is None:
            raise RuntimeError(f"{spec.name}: warm-up tasks did not finish")
        results = []
        for scenario in scenarios:
            r = run_scenario(server, counter, scenario, args, round_no, wrk_script)
            print(
                f"  round {round_no} {spec.name:<21} {scenario.name:<22} "
                f"{r.requests_per_s:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
                f"{r.tasks_per_s:8.0f} tasks/s  lag {r.drain_lag_s:5.2f} s  "
                f"lines {r.lines_written}/{r.tasks_expected}"
                + (f"  rejected {r.rejected}" if r.rejected else "")
                + (f"  errors {r.errors}" if r.errors else ""),
                flush=True,
            )
            results.append(r)
        peak_rss_kb = proc_status(server.proc.pid, "VmHWM")
    finally:
        code = server.stop()
    return results, {
        "app": spec.name,
        "round": round_no,
        "peak_rss_kb": peak_rss_kb,
        "exit_code": code,
    }


# --------------------------------------------------------------------------- report

METRICS = (
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "tasks_per_s",
    "drain_lag_s",
    "server_cpu_us_per_request",
)
RATIO_METRICS = ("requests_per_s", "p50_ms", "p99_ms", "tasks_per_s", "server_cpu_us_per_request")


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(
    runs: list[ScenarioResult], servers: list[dict[str, Any]], apps: list[str]
) -> dict[str, Any]:
    rows = [asdict(r) for r in runs]
    summary: dict[str, Any] = {}
    for app in apps:
        summary[app] = {
            "peak_rss_mb": (median_of([s for s in servers if s["app"] == app], "peak_rss_kb") or 0)
            / 1024
        }
        for scenario in SCENARIOS:
            mine = [r for r in rows if r["app"] == app and r["scenario"] == scenario]
            if not mine:
                continue
            entry = {m: median_of(mine, m) for m in METRICS}
            entry["stdout_bytes_per_request"] = median_of(mine, "stdout_bytes_per_request")
            entry["rejected"] = sum(r["rejected"] for r in mine)
            entry["errors"] = sum(r["errors"] for r in mine)
            entry["lost"] = sum(r["lost"] for r in mine)
            summary[app][scenario] = entry
    ratios: dict[str, dict[str, Any]] = {}
    for baseline in BASELINES:
        if baseline not in summary:
            continue
        base = summary[baseline]
        ratios[baseline] = {}
        for app in apps:
            if app == baseline or (baseline != "tutorial" and app.startswith("tutorial")):
                continue
            r: dict[str, Any] = {"peak_rss": summary[app]["peak_rss_mb"] / base["peak_rss_mb"]}
            for scenario in SCENARIOS:
                if scenario in summary[app] and scenario in base:
                    r[scenario] = {
                        m: summary[app][scenario][m] / base[scenario][m]
                        for m in RATIO_METRICS
                        if base[scenario][m]
                    }
            ratios[baseline][app] = r
    return {
        "medians": summary,
        "ratios_vs_tutorial": ratios.get("tutorial", {}),
        "ratios_vs_tutorial_instrumented": ratios.get("tutorial-instrumented", {}),
    }


def machine_info(loadgen: str) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except OSError:
            return ""

    wrk_version = ""
    if loadgen == "wrk":
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk_version = (out.stdout or out.stderr).splitlines()[0]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fastapi": version("fastapi"),
        "starlette": version("starlette"),
        "uvicorn": version("uvicorn"),
        "loadgen": loadgen,
        "wrk": wrk_version,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    medians = result["summary"]["medians"]
    notes = {
        "tutorial": "`tutorial`: the tutorial app, uninstrumented",
        "tutorial-instrumented": "`tutorial-instrumented`: the same with "
        "prometheus-fastapi-instrumentator (HTTP metrics, `/metrics`) and "
        "opentelemetry-instrumentation-fastapi (request spans, SDK TracerProvider, no exporter); "
        "no access log; background tasks unobserved",
        "ours": "`ours`: the service, JSON logs to a file",
        "ours-devnull": "`ours-devnull`: JSON logs to /dev/null",
    }
    out = [
        "# Throughput: service vs tutorial app (bare and with the usual instrumentation)",
        "",
        f"- date: {m['date']}; machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}",
        f"- Python {m['python']}, FastAPI {m['fastapi']}, Starlette {m['starlette']}, "
        f"uvicorn {m['uvicorn']} (one worker, `--log-level warning`)",
        f"- git {m['git_commit']}{' (dirty tree)' if m['git_dirty'] else ''}",
        f"- load: {cfg['requests']} requests per scenario, concurrency {cfg['concurrency']}, "
        f"warm-up {cfg['warmup']}, generator `{m['loadgen']}`"
        + (f" ({m['wrk']})" if m["wrk"] else "")
        + f"; median of {cfg['rounds']} rounds (order alternating)",
        "- "
        + "; ".join(notes[a] for a in medians if a in notes)
        + ". tasks/s = tasks / (first request .. last task line in log.txt); "
        "lag = last response .. last task line.",
        "",
        "| app | scenario | req/s | p50 ms | p99 ms | tasks/s | lag s | CPU µs/req | "
        "log B/req | lines lost | rejected |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for app, per_app in medians.items():
        for scenario in SCENARIOS:
            if scenario not in per_app:
                continue
            e = per_app[scenario]
            # the tutorial apps log nothing to stdout
            log_bytes = (
                "-" if app.startswith("tutorial") else fmt(e["stdout_bytes_per_request"], ".0f")
            )
            out.append(
                f"| {app} | {scenario} | {fmt(e['requests_per_s'], '.0f')} | "
                f"{fmt(e['p50_ms'], '.2f')} | {fmt(e['p99_ms'], '.2f')} | "
                f"{fmt(e['tasks_per_s'], '.0f')} | {fmt(e['drain_lag_s'], '.2f')} | "
                f"{fmt(e['server_cpu_us_per_request'], '.0f')} | "
                f"{log_bytes} | "
                f"{e['lost']} | {e['rejected']} |"
            )
    out += ["", "| app | peak RSS (VmHWM) MB |", "|---|---:|"]
    out += [f"| {app} | {per_app['peak_rss_mb']:.1f} |" for app, per_app in medians.items()]
    for key, baseline in (
        ("ratios_vs_tutorial", "tutorial"),
        ("ratios_vs_tutorial_instrumented", "tutorial-instrumented"),
    ):
        ratios = result["summary"].get(key)
        if not ratios:
            continue
        out += [
            "",
            f"Ratios app / {baseline} (req/s and tasks/s: higher is better; latency, CPU, RSS: "
            "lower is better):",
            "",
            "| app | scenario | req/s | p50 | p99 | tasks/s | CPU/req | RSS |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for app, r in ratios.items():
            for scenario in SCENARIOS:
                if scenario not in r:
                    continue
                x = r[scenario]
                out.append(
                    f"| {app} | {scenario} | {fmt(x.get('requests_per_s'), '.2f')} | "
                    f"{fmt(x.get('p50_ms'), '.2f')} | {fmt(x.get('p99_ms'), '.2f')} | "
                    f"{fmt(x.get('tasks_per_s'), '.2f')} | "
                    f"{fmt(x.get('server_cpu_us_per_request'), '.2f')} | "
                    f"{r['peak_rss']:.2f} |"
                )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8_000, help="per scenario and run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500, help="requests per scenario")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--apps", default=",".join(DEFAULT_APPS), help="comma-separated, of: " + ", ".join(APPS)
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest")
    args = parser.parse_args()

    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    apps = [a for a in args.apps.split(",") if a]
    for a in apps:
        if a not in APPS:
            parser.error(f"unknown app {a!r}")
    info = machine_info(loadgen)
    print(
        f"bench: {info['nproc']} CPUs, Python {info['python']}, load generator {loadgen}, "
        f"{args.requests} requests x {len(SCENARIOS)} scenarios x {len(apps)} apps "
        f"x {args.rounds} rounds, concurrency {args.concurrency}",
        flush=True,
    )
    runs: list[ScenarioResult] = []
    servers: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmpdir:
        tmp = Path(tmpdir)
        wrk_script = None
        if loadgen == "wrk":
            wrk_script = tmp / "bench.lua"
            wrk_script.write_text(WRK_LUA)
        for round_no in range(args.rounds):
            order = apps if round_no % 2 == 0 else apps[::-1]
            scenarios = list(SCENARIOS.values())
            if round_no % 2:
                scenarios.reverse()
            for app in order:
                results, server_info = run_app(
                    APPS[app], scenarios, args, round_no, wrk_script, tmp
                )
                runs += results
                servers.append(server_info)
    elapsed = time.monotonic() - started

    result = {
        "machine": info,
        "config": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "apps": apps,
            "scenarios": {s.name: asdict(s) for s in SCENARIOS.values()},
            "elapsed_seconds": round(elapsed, 1),
        },
        "summary": summarise(runs, servers, apps),
        "runs": [asdict(r) for r in runs],
        "servers": servers,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.output.with_suffix(".json")
    md_path = args.output.with_suffix(".md")
    json_tmp = json_path.with_suffix(".json.tmp")
    json_tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    json_tmp.replace(json_path)
    text = markdown(result)
    md_path.write_text(text)
    print()
    print(text)
    shown = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    print(f"wrote {shown}, {md_path.name}; {elapsed:.0f} s")

    lost = [r for r in runs if r.lost != 0]
    if lost:
        for r in lost:
            print(
                f"LOST: {r.app} {r.scenario} round {r.round}: "
                f"{r.lines_written} lines for {r.tasks_expected} accepted tasks",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
