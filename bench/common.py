"""Helpers shared by the benchmark parts: ports, /proc readings, machine and version info."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-fastapi",
    "prometheus-client",
    "prometheus-fastapi-instrumentator",
    "structlog",
    "orjson",
    "celery",
    "kombu",
    "redis",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM, ...), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (e.g. a Celery prefork pool), plus the time of
    its children it already reaped."""
    total = 0.0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime
        total += sum(int(x) for x in fields[11:15]) / CLK_TCK
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(child)
    return total


def children(pid: int) -> list[int]:
    """Live children of process ``pid``, whichever of its threads started them (the span export
    helper is started by the batch processor's thread, a prefork pool by the main one)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids += (int(x) for x in task.read_text().split())
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds the machine spent running processes, plus time the hypervisor gave to others
    (steal), from the first line of /proc/stat. Interrupt time is left out: the loopback traffic
    of the benchmark itself lands there without being charged to its processes."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + steal) / CLK_TCK


def self_and_children_cpu() -> float:
    """CPU seconds of this process and of its children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class NoiseMeter:
    """How busy the rest of the machine was during a measurement: all busy CPU time minus the
    processes we account for (``accounted``), as cores on average. Noise from other users of a
    shared machine shows up here."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.self0 = self_and_children_cpu()

    def other_cores(self, accounted_cpu: float) -> float:
        wall = time.monotonic() - self.t0
        busy = machine_busy_seconds() - self.busy0
        ours = self_and_children_cpu() - self.self0 + accounted_cpu
        return max(0.0, busy - ours) / wall if wall > 0 else 0.0


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


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

    def wait_for(self, expected: int, timeout: float, interval: float = 0.002) -> float | None:
        """Poll until ``expected`` lines; the monotonic time they were there, or None."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            now = time.monotonic()
            if n >= expected:
                return now
            if now > deadline:
                return None
            time.sleep(interval)


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _first_line(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "-"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "-"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "-"


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {pkg: version(pkg) for pkg in PACKAGES},
        "wrk": _first_line(["wrk", "--version"]),
        "redis_server": _first_line(["redis-server", "--version"]),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_start": loadavg(),
    }


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def wait_exit(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """Wait for a process of ours to exit; kill it (by its pid) if it does not."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """SIGTERM a process of ours if it still runs, then ``wait_exit``: its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return wait_exit(proc, timeout)


def selection(names: str, known: Mapping[str, Any], baseline: str, what: str) -> list[str]:
    """The comma-separated ``names``, all of them ``known`` (else exit saying which are not),
    with ``baseline`` first when it was left out."""
    chosen = [name for name in names.split(",") if name]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    if baseline not in chosen:
        chosen.insert(0, baseline)
    return chosen
