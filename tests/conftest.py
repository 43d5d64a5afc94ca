"""Shared fixtures: a real uvicorn process on a free port, a real OTLP/HTTP receiver."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from tests.stack.live import api_command, ephemeral_redis, free_port, worker_command

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition ``text`` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class ChildProcess:
    """A real process of ours, its stdout (JSON log lines) in a file, with a clean environment
    (no inherited ``NOTIFY_*``/``OTEL_*``) plus ``env``."""

    def __init__(self, command: list[str], stdout_path: Path, env: dict[str, str]) -> None:
        self.stdout_path = stdout_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
        self._stdout = stdout_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env | {"PYTHONUNBUFFERED": "1"} | env,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.process.args} exited early:\n{self.raw_output()}")

    def raw_output(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8")

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw_output().splitlines() if line[:1] == "{"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

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
        wait_until(self._healthy, timeout=20)

    def _healthy(self) -> bool:
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
        wait_until(self._ready, timeout=30)

    def _ready(self) -> bool:
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


class FifoReader:
    """The reading end of a FIFO sink: opening it lets a writer blocked on the FIFO go on."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def read(self) -> bytes:
        with contextlib.suppress(BlockingIOError):  # a writer, no data yet
            self.data += os.read(self.fd, 65536)
        return self.data

    def close(self) -> None:
        os.close(self.fd)


def _starter(kind: type[ChildProcess], tmp_path: Path) -> Iterator[Any]:
    started: list[ChildProcess] = []

    def start(**env: str) -> ChildProcess:
        child = kind(tmp_path, env)  # type: ignore[call-arg]
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Any]:
    """Start service processes (``start_service(**env)``); all are stopped at teardown."""
    yield from _starter(ServiceProcess, tmp_path)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    """Start Celery worker processes (``start_worker(**env)``); stopped at teardown."""
    yield from _starter(WorkerProcess, tmp_path)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test session's own (never a Redis someone else uses)."""
    with ephemeral_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    """The session's own Redis, emptied for each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.close()


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver: decodes ``ExportTraceServiceRequest`` protobufs."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    for resource_spans in request.resource_spans:
                        resource = {
                            a.key: a.value.string_value for a in resource_spans.resource.attributes
                        }
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend((resource, s) for s in scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def named(self, prefix: str) -> list[Span]:
        with self._lock:
            return [span for _, span in self.spans if span.name.startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def span_attributes(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return values


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Environment that makes the service export spans quickly to ``receiver``."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "notification-test",
    }
