"""The one process runner: real processes of ours (uvicorn, Celery workers) and the real
servers they need (redis-server, prometheus), each on a free port, output in a file, stopped by
its own pid only."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.metrics import sample_value
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without ``NOTIFY_*``/``OTEL_*`` (a test sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}


def api_command(port: int, *options: str, factory: str = "service.main:create_app") -> list[str]:
    """The contract's API entry point on 127.0.0.1:``port`` plus uvicorn ``options`` (tests may
    name another factory)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]


def worker_command(hostname: str) -> list[str]:
    """The contract's worker entry point (quiet: no gossip, mingle or heartbeat)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "service.worker",
        "worker",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        f"{hostname}@%h",
    ]


class ChildProcess:
    """A real process, its output (stdout and stderr; JSON log lines for ours) in a file, with a
    clean environment (no inherited ``NOTIFY_*``/``OTEL_*``) plus ``env``. A subclass with
    ``separate_stderr`` keeps stderr in a file of its own (``stderr_path``)."""

    separate_stderr = False

    def __init__(
        self, command: list[str], stdout_path: Path, env: dict[str, str], name: str = ""
    ) -> None:
        self.name = name or " ".join(command[:5])
        self.stdout_path = stdout_path
        self._stdout = stdout_path.open("wb")
        self.stderr_path = stdout_path.with_suffix(".stderr")
        stderr = self.stderr_path.open("wb") if self.separate_stderr else subprocess.STDOUT
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_environment() | {"PYTHONUNBUFFERED": "1"} | env,
            stdout=self._stdout,
            stderr=stderr,
        )
        if not isinstance(stderr, int):
            stderr.close()  # the child has its own copy

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited early with {self.process.returncode}:\n"
                f"{self.raw_output()[-4000:]}"
            )

    def raw_output(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw_output().splitlines() if line[:1] == "{"]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of event ``name``."""
        return [line for line in self.logs() if line.get("event") == name]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit status (killed after ``timeout`` seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def terminate(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(signal.SIGTERM, timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stdout.close()


class ServiceProcess(ChildProcess):
    """``uvicorn --factory service.main:create_app`` on a free port."""

    factory = "service.main:create_app"

    def __init__(self, tmp_path: Path, env: dict[str, str], options: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(env.get("NOTIFY_DATA_DIR", tmp_path / "data"))
        super().__init__(
            api_command(self.port, *options, factory=self.factory),
            tmp_path / f"service-{self.port}.log",
            {"NOTIFY_DATA_DIR": str(self.data_dir)} | env,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self.healthy, timeout=20, what=f"{self.url}/healthz")

    def healthy(self) -> bool:
        self.check_alive()
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self, openmetrics: bool = False) -> str:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        return self.client.get("/metrics", headers=headers).text

    def value(self, name: str, **labels: str) -> float:
        return sample_value(self.metrics(), name, **labels)

    def close(self) -> None:
        super().close()
        self.client.close()


class FaultyServiceProcess(ServiceProcess):
    """The service with deliberately bad tasks (tests/support/faulty_app.py)."""

    factory = "tests.support.faulty_app:create_app"


class WorkerProcess(ChildProcess):
    """``celery -A service.worker worker``, its own /metrics on a free port."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.metrics_port = free_port()
        super().__init__(
            worker_command(f"test-{self.metrics_port}"),
            tmp_path / f"worker-{self.metrics_port}.log",
            {"NOTIFY_WORKER_METRICS_PORT": str(self.metrics_port)} | env,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.metrics_port}", timeout=10)
        wait_until(self.ready, timeout=30, what="the worker to be ready")

    def ready(self) -> bool:
        self.check_alive()
        return "ready." in self.raw_output()

    def value(self, name: str, **labels: str) -> float:
        return sample_value(self.client.get("/metrics").text, name, **labels)

    def close(self) -> None:
        if self.process.poll() is None:  # a warm shutdown first
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(20)
        super().close()
        self.client.close()


@contextlib.contextmanager
def ephemeral_redis(workdir: Path, port: int | None = None) -> Iterator[str]:
    """A redis-server of its own on a free port, or on ``port`` (to restart one), with nothing
    kept on disk; yields its URL. Tests never touch a Redis someone else uses."""
    import redis

    port = port or free_port()
    process = ChildProcess(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        workdir / f"redis-{port}.log",
        {},
        name="redis",
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        process.check_alive()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, 20, what="redis-server to answer", interval=0.25)
        yield url
    finally:
        client.close()
        process.terminate()


def export_children(parent: int | None = None) -> list[int]:
    """Pids of the span export helpers of process ``parent`` (this one by default)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"observability.tracing.export_helper" in cmdline:
            pids.append(int(entry.name))
    return pids


P = TypeVar("P", bound=ChildProcess)


def start_processes(
    kind: Callable[[Path, dict[str, str]], P], tmp_path: Path
) -> Iterator[Callable[..., P]]:
    """A fixture body: yields ``start(**env)``, which starts a ``kind`` process with ``env``;
    every process started is closed at teardown."""
    started: list[P] = []

    def start(**env: str) -> P:
        child = kind(tmp_path, env)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill_worker(worker: "WorkerProcess") -> list[int]:
    """SIGKILL a Celery worker's main process, then its pool's children (the main process
    first: nobody is left to put a task back or acknowledge it), and wait for the main
    process; removes the metrics directory it leaves behind. Returns the children's pids."""
    import tempfile

    from observability.metrics import directory as metrics_dir

    children = children_of(worker.process.pid)
    worker.process.kill()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    worker.process.wait(10)
    metrics_dir.remove(Path(tempfile.gettempdir()) / f"notify-worker-metrics-{worker.process.pid}")
    return children
