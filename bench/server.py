"""One app under test served by real uvicorn on a free 127.0.0.1 port: start, readings, stop.

Every app gets the same server: one process, ``--loop uvloop --http httptools --log-level
warning --no-access-log``, its file sinks in a fresh ``NOTIFY_DATA_DIR`` and, when it exports
spans, a local OTLP receiver of its own (``bench/otlp_sink.py``). Both are processes of the
harness, stopped by their pid.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.apps import AppSpec
from bench.common import (
    HOST,
    ROOT,
    free_port,
    proc_cpu_seconds,
    stop_process,
    tree_cpu_seconds,
)
from bench.load import IDLE_PATH
from bench.otlp_sink import Sink
from observability import names


def http_probe(port: int) -> bool:
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
        """The server's CPU with its children's (the span export helper): the service's cost is
        not made smaller by moving work to another process."""
        return tree_cpu_seconds(self.proc.pid)

    def wait_for_export_helper(self, timeout: float) -> bool:
        """Whether the service has exported spans through its export helper (started at the
        first batch: at most the batch processor's schedule delay, 5 s, after the first span,
        then a Python start-up) within ``timeout`` seconds; so that the helper's start-up is
        the warm-up's, not charged to a measured scenario."""
        deadline = time.monotonic() + timeout
        while self._spans_exported() <= 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _spans_exported(self) -> float:
        """``tracing_spans_exported_total{outcome="success"}`` of the service's ``/metrics``."""
        prefix = f'{names.SPANS_EXPORTED}{{outcome="{names.OUTCOME_SUCCESS}"}} '
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        line = next((x for x in text.splitlines() if x.startswith(prefix)), None)
        return float(line[len(prefix) :].split()[0]) if line else 0.0

    def own_cpu_seconds(self) -> float:
        """The uvicorn process alone (the rest of ``cpu_seconds`` is its helper's)."""
        return proc_cpu_seconds(self.proc.pid)

    def sink_cpu_seconds(self) -> float:
        return self.sink.cpu_seconds() if self.sink else 0.0

    def stop(self) -> tuple[int | None, dict[str, Any]]:
        """Stop the server (SIGTERM: its lifespan drains and flushes spans), then the sink."""
        code = stop_process(self.proc, 40)
        self._stdout.close()
        self._stderr.close()
        sink_stats = self.sink.stop() if self.sink else {}
        return code, sink_stats
