"""wrk driven to send exactly N requests: its Lua script and the driver that reads its result.

wrk runs for a fixed duration and reports only latencies; the benchmark needs a given number of
requests, 2xx and other statuses counted apart, and the times of the first request and of the
last response on Python's clock. The Lua script does all three and prints them as JSON; the
driver stops wrk once the script says it is done. ``bench/load.py`` turns that into a
``LoadResult``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from bench.common import HOST

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


def run_wrk(
    port: int,
    path: str,
    requests: int,
    concurrency: int,
    script: Path,
    cap_seconds: int,
    idle_path: str,
    delay_ms: float = 0.0,
) -> dict[str, Any]:
    """Run wrk with ``script`` (``WRK_LUA``) until ``requests`` responses are in; the script's
    JSON (counts, monotonic times, latencies in µs)."""
    env = {
        **os.environ,
        "BENCH_QUOTA": str(requests),
        "BENCH_PATH": path,
        "BENCH_IDLE_PATH": idle_path,
        "BENCH_DELAY_MS": str(delay_ms),
    }
    # One wrk thread: it leaves the other core to the server (wrk is far cheaper per request).
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{cap_seconds}s", "--timeout", "30s",
        "-s", str(script), f"http://{HOST}:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    payload: dict[str, Any] | None = None
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
    return payload
