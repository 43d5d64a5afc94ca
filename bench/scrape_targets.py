"""The servers the ``scrape`` part scrapes: the API under ``uvicorn --workers N`` and a Celery
prefork worker, each a process tree of the harness's own, with what the part needs of them.

Each target runs with ``TMPDIR`` pointing into the part's scratch folder, so that the metrics
directory it claims (``notify-api-metrics-{supervisor}-{start}`` or
``notify-worker-metrics-{pid}``, see ``observability/metrics/directory.py``) is found there and
nothing is left in the machine's ``/tmp``. Both export spans (10% sampled) to a local OTLP
receiver of their own (``bench/otlp_sink.py``), like the throughput part's ``ours-sampled-10``.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from bench.apps import APPS
from bench.celery_round import publish
from bench.celery_workers import stop_worker, worker_command, worker_env
from bench.common import HOST, ROOT, LineCounter, children, free_port, stop_process
from bench.otlp_sink import Sink
from bench.redis_server import Redis
from bench.server import http_probe, server_env, uvicorn_options

API_SPEC = APPS["ours-sampled-10"]
NOTIFY_PATH = "/send-notification/user@example.com"


class Target(Protocol):
    """What the part needs of a server whose ``/metrics`` it scrapes."""

    name: str
    pid: int  # the root of the process tree (its CPU is the tree's)
    port: int  # where /metrics is served
    path: str  # the /metrics path on that port
    control_path: str  # a path on the same port that does next to nothing (the HTTP floor)
    gc_freeze: bool  # NOTIFY_GC_FREEZE

    def workers(self) -> list[int]:
        """The pids of the live worker processes (the ones the restarts kill)."""

    def metrics_dir(self) -> Path | None:
        """The multiprocess directory, or None (single-process mode)."""

    def wait_ready(self, killed: set[int], timeout: float) -> None:
        """Wait until every worker runs again, none of them one of ``killed``."""

    def drive(self, count: int) -> None:
        """Put ``count`` tasks through the target and wait until they are done."""

    def stop(self) -> None: ...


class ApiCluster:
    """``uvicorn --factory service.main:create_app --workers N`` (N = 1: one process, no
    supervisor, prometheus-client in single-process mode)."""

    def __init__(self, workers: int, workdir: Path, *, gc_freeze: bool = True) -> None:
        self.name = _named(f"API --workers {workers}", gc_freeze)
        self.gc_freeze = gc_freeze
        self.n = workers
        self.path = "/metrics"
        self.control_path = "/healthz"
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True)
        self.log = LineCounter(workdir / "data" / "log.txt")
        self.done = 0
        self.sink = Sink(workdir / "sink", keep_bodies=False)
        env = server_env(API_SPEC, workdir / "data", self.sink.endpoint)
        env["TMPDIR"] = str(self.tmp)
        env["NOTIFY_GC_FREEZE"] = "true" if gc_freeze else "false"
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", API_SPEC.target, "--factory"]
        cmd += ["--host", HOST, "--port", str(self.port), "--workers", str(workers)]
        self.stdout = open(workdir / "stdout.log", "wb")  # noqa: SIM115
        self.stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*cmd, *uvicorn_options()], cwd=ROOT, env=env, stdout=self.stdout, stderr=self.stderr
        )
        self.pid = self.proc.pid
        try:
            self.wait_ready(set(), 90)
        except RuntimeError:
            self.stop()
            raise

    def workers(self) -> list[int]:
        if self.n == 1:
            return [self.pid]
        # the supervisor's children, without multiprocessing's resource tracker
        return [pid for pid in children(self.pid) if b"spawn_main" in _cmdline(pid)]

    def wait_ready(self, killed: set[int], timeout: float) -> None:
        """Wait until N workers run, none of them in ``killed``, each with its metric files
        written (the app is created), and the port answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            pids = self.workers()
            fresh = len(pids) == self.n and not killed & set(pids)
            if fresh and self._have_files(pids) and http_probe(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready: {_tail(self.stderr.name)}")

    def _have_files(self, pids: list[int]) -> bool:
        path = self.metrics_dir()
        if path is None:
            return True
        return all((path / f"counter_{pid}.db").exists() for pid in pids)

    def metrics_dir(self) -> Path | None:
        found = sorted(self.tmp.glob("notify-api-metrics-*"))
        return found[0] if found else None

    def drive(self, count: int) -> None:
        """``count`` POST /send-notification requests, each on a connection of its own (so the
        kernel spreads them over the workers), then wait for their lines in ``log.txt``."""
        for _ in range(count):
            conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
            conn.request("POST", NOTIFY_PATH)
            status = conn.getresponse().status
            conn.close()
            if status >= 400:
                raise RuntimeError(f"{self.name}: POST {NOTIFY_PATH} answered {status}")
        self.done += count
        if self.log.wait_for(self.done, 30) is None:
            raise RuntimeError(f"{self.name}: {self.log.count()}/{self.done} tasks done")

    def stop(self) -> None:
        stop_process(self.proc, 40)
        self.stdout.close()
        self.stderr.close()
        self.sink.stop(count=False)


class CeleryWorker:
    """``celery -A service.worker worker --pool prefork -c N`` on a Redis of our own; its
    merged metrics on ``NOTIFY_WORKER_METRICS_PORT``."""

    def __init__(self, concurrency: int, workdir: Path, *, gc_freeze: bool = True) -> None:
        self.name = _named(f"Celery -c {concurrency}", gc_freeze)
        self.gc_freeze = gc_freeze
        self.n = concurrency
        self.path = "/metrics"
        self.control_path = "/favicon.ico"  # prometheus-client's server answers it empty
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True)
        data = workdir / "data"
        data.mkdir()
        self.log = LineCounter(data / "log.txt")
        self.done = 0
        self.redis = Redis(workdir / "redis")
        self.sink = Sink(workdir / "sink", keep_bodies=False)
        url, endpoint = self.redis.url, self.sink.endpoint
        env = worker_env("ours-sampled-10", url, data, {}, concurrency, endpoint)
        env["TMPDIR"] = str(self.tmp)
        env["NOTIFY_GC_FREEZE"] = "true" if gc_freeze else "false"
        self.port = int(env["NOTIFY_WORKER_METRICS_PORT"])
        self.hostname = f"bench-scrape-{os.getpid()}-{concurrency}"
        cmd = worker_command("service.worker", self.hostname, "prefork", concurrency)
        self.stdout = open(workdir / "stdout.log", "wb")  # noqa: SIM115
        self.stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.stdout, stderr=self.stderr)
        self.pid = self.proc.pid
        self.seen: set[int] = set()
        try:
            self.wait_ready(set(), 90)
        except RuntimeError:
            self.stop()
            raise

    def workers(self) -> list[int]:
        pids = children(self.pid)
        self.seen.update(pids)
        return pids

    def wait_ready(self, killed: set[int], timeout: float) -> None:
        """Wait until the pool has N processes, none of them in ``killed``, and the metrics
        port answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            pids = self.workers()
            if len(pids) == self.n and not killed & set(pids) and _answers(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready: {_tail(self.stderr.name)}")

    def metrics_dir(self) -> Path | None:
        return self.tmp / f"notify-worker-metrics-{self.pid}"

    def drive(self, count: int) -> None:
        """Publish ``count`` ``write_log`` tasks as the API does; wait for their lines."""
        publish("ours-sampled-10", self.redis.url, count, {})
        self.done += count
        if self.log.wait_for(self.done, 60) is None:
            raise RuntimeError(f"{self.name}: {self.log.count()}/{self.done} tasks done")
        time.sleep(0.2)  # late acks: let the last ones be acknowledged before any kill

    def stop(self) -> None:
        stop_worker(self.proc, self.hostname, self.seen)
        self.stdout.close()
        self.stderr.close()
        self.sink.stop(count=False)
        self.redis.stop()


def _named(name: str, gc_freeze: bool) -> str:
    """A target's name, saying when it runs without the default ``NOTIFY_GC_FREEZE``."""
    return name if gc_freeze else f"{name} (NOTIFY_GC_FREEZE=false)"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", "/metrics")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _tail(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")[-2000:]
    except OSError:
        return ""
