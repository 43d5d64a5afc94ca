"""Load generators: ``wrk`` driven by a Lua script that stops after exactly N requests
(``bench/wrk.py``), or a built-in asyncio client (fallback when wrk is not installed). Both
report 2xx ("accepted") and other statuses ("rejected", e.g. 503 when the service's backlog is
full) separately."""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import HOST
from bench.wrk import WRK_LUA, run_wrk

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
    return _load_result(requests, statuses, latencies, errors, start, last or time.monotonic())


def _load_result(
    requests: int,
    statuses: Counter[int],
    latencies: list[int],
    errors: int,
    start: float,
    end: float,
) -> LoadResult:
    """The asyncio client's ``LoadResult``: its statuses counted, its latencies (ns) sorted into
    percentiles (ms)."""
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
        end=end,
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


def _wrk_result(payload: dict[str, Any]) -> LoadResult:
    """The ``LoadResult`` of what wrk's Lua script reported (``bench/wrk.py``)."""
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
            payload = run_wrk(
                port, path, requests, concurrency, self.script, cap, IDLE_PATH, delay_ms
            )
            return _wrk_result(payload)
        return python_load(port, path, requests, concurrency, delay_ms)
