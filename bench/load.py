"""Load generators: ``wrk`` driven by a Lua script that stops after exactly N requests, or a
built-in asyncio client (fallback when wrk is not installed). Both report 2xx ("accepted") and
other statuses ("rejected", e.g. 503 when the service's backlog is full) separately."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import HOST

IDLE_PATH = "/__bench_idle"  # 404 in every app, runs no task


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


async def _python_load(
    port: int, path: str, requests: int, concurrency: int, delay_ms: float = 0.0
) -> LoadResult:
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
            if delay_ms:
                await asyncio.sleep(delay_ms * (0.5 + random.random()) / 1000)
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


def python_load(
    port: int, path: str, requests: int, concurrency: int, delay_ms: float = 0.0
) -> LoadResult:
    return asyncio.run(_python_load(port, path, requests, concurrency, delay_ms))


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
-- paced mode: each connection waits about BENCH_DELAY_MS (jittered) before each request, so
-- that the offered load is about connections / delay whatever the app's speed
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if delay_ms > 0 then
  function delay() return delay_ms * (0.5 + math.random()) end
end
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
    port: int,
    path: str,
    requests: int,
    concurrency: int,
    script: Path,
    cap_seconds: int,
    delay_ms: float = 0.0,
) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_QUOTA": str(requests),
        "BENCH_PATH": path,
        "BENCH_IDLE_PATH": IDLE_PATH,
        "BENCH_DELAY_MS": str(delay_ms),
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


def resolve_loadgen(kind: str) -> str:
    """``auto``: ``wrk`` when installed, else ``python``."""
    if kind == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return kind


class LoadGenerator:
    """``wrk`` (one thread) when available, else the built-in asyncio client."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.script: Path | None = None
        if kind == "wrk":
            self.script = workdir / "bench.lua"
            self.script.write_text(WRK_LUA)

    def run(
        self, port: int, path: str, requests: int, concurrency: int, rate: float | None = None
    ) -> LoadResult:
        """``requests`` requests as fast as the app answers, or paced at about ``rate`` req/s
        (each connection waits ``concurrency / rate`` seconds on average before each request)."""
        delay_ms = concurrency / rate * 1000 if rate else 0.0
        if self.script is not None:
            cap = max(120, requests // 50, int(3 * requests / rate) if rate else 0)
            return wrk_load(port, path, requests, concurrency, self.script, cap, delay_ms)
        return python_load(port, path, requests, concurrency, delay_ms)
