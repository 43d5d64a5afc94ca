"""The public face adopted by an app that is not this service (``examples/url_pinger.py``),
run for real: uvicorn on a free port, a real URL to call, a real OTLP receiver."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.metrics import sample_value
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ChildProcess, api_command, free_port

pytestmark = pytest.mark.e2e


class Target:
    """A real HTTP server counting the GETs it answers."""

    def __init__(self) -> None:
        self.hits = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.hits += 1
                self.send_response(200 if self.path == "/ok" else 503)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_example_app_tasks_are_measured_traced_and_logged(
    tmp_path: Path, target: Target, otlp_receiver: OtlpReceiver
) -> None:
    """A foreign app's task gets the contract's metrics, span and terminal log line."""
    port = free_port()
    app = ChildProcess(
        api_command(port, factory="examples.url_pinger:create_app"),
        tmp_path / "example.log",
        otlp_env(otlp_receiver),
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def metric(name: str, **labels: str) -> float:
        text = client.get("/metrics").text
        return sample_value(text, name, task="ping", backend="inprocess", **labels)

    def up() -> bool:
        app.check_alive()
        try:
            return client.get("/metrics").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=20)
        assert metric("background_task_finished_total", outcome="success") == 0  # declared
        ok = client.post("/ping", params={"url": f"{target.url}/ok"}).json()["task_ids"][0]
        bad = client.post("/ping", params={"url": f"{target.url}/down"}).json()["task_ids"][0]
        wait_until(lambda: metric("background_task_finished_total", outcome="failure") == 1)
        wait_until(lambda: metric("background_task_finished_total", outcome="success") == 1)
        assert target.hits == 2
        assert metric("background_task_failures_total", exception="HTTPError") == 1
        assert metric("background_task_duration_seconds_count", outcome="success") == 1
        spans = wait_until(
            lambda: (
                len(otlp_receiver.named("background_task ping")) == 2
                and otlp_receiver.named("background_task ping")
            )
        )
        ids = {span_attributes(span)["background_task.id"] for span in spans}
        assert ids == {ok, bad}
        assert len(otlp_receiver.named("POST /ping")) == 2
    finally:
        app.stop()
        client.close()
    ends = {line["task_id"]: line for line in app.logs() if line["event"].startswith("task.")}
    assert ends[ok]["event"] == "task.succeeded" and ends[ok]["backend"] == "inprocess"
    assert ends[bad]["event"] == "task.failed" and ends[bad]["error_type"] == "HTTPError"
    assert {"started_at", "finished_at", "duration_seconds", "trace_id"} <= ends[ok].keys()
