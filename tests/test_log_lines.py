"""Every line a real API or Celery worker process writes, on stdout and on stderr, is one JSON
object a log platform can read: base fields, the message under ``message``, node names kept,
e-mail addresses masked, the access log in fields."""

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from observability.logs.processors import json_renderer, mask_personal_data
from observability.logs.worker_output import banner
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, WorkerProcess, start_processes

BASE_FIELDS = {"timestamp", "level", "event", "message"}


class SeparateService(ServiceProcess):
    separate_stderr = True


class SeparateWorker(WorkerProcess):
    separate_stderr = True


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., SeparateService]]:
    """Start API processes whose stderr is kept apart from their stdout."""
    yield from start_processes(SeparateService, tmp_path)


@pytest.fixture
def start_celery_worker(tmp_path: Path) -> Iterator[Callable[..., SeparateWorker]]:
    """Start Celery workers whose stderr is kept apart from their stdout."""
    yield from start_processes(SeparateWorker, tmp_path)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as a JSON object with the base fields (fails on any other)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert set(record) >= BASE_FIELDS, line
        assert record["message"] == record["event"] and record["timestamp"].endswith("Z")
        records.append(record)
    return records


def test_worker_writes_json_lines_only_from_start_to_warm_shutdown(
    start_service: Any, start_celery_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """A real worker's stdout and stderr, banner and SIGTERM included, are JSON lines only:
    the banner is one event (node name kept, unmasked), the warm shutdown another."""
    env = {"NOTIFY_BROKER_URL": broker_url, "NOTIFY_DATA_DIR": str(tmp_path / "data")}
    worker = start_celery_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    task_id = api.client.post("/send-notification/bob@example.com").json()["task_ids"][0]
    (run,) = wait_until(lambda: worker.events("task.succeeded"))
    assert worker.stop(signal.SIGTERM) == 0
    assert run["task_id"] == task_id
    records = json_lines(worker.stdout_path) + json_lines(worker.stderr_path)
    events = {record["event"]: record for record in records}
    node = f"test-{worker.metrics_port}@"
    (startup,) = [r for r in records if r["event"] == "worker.banner"]
    assert startup["node"].startswith(node) and startup["queues"] == ["celery"]
    assert "background_task.write_log" in startup["tasks"] and startup["concurrency"] >= 1
    assert startup["broker"].endswith(broker_url.split("://", 1)[1])
    assert any(e.startswith(node) and e.endswith(" ready.") for e in events)
    shutdown = events["worker.shutting_down"]
    assert (shutdown["signal"], shutdown["shutdown"]) == ("SIGTERM", "warm")
    assert "bob@example.com" not in worker.raw_output() + worker.stderr_path.read_text()
    if os.geteuid() == 0:  # Celery's SecurityWarning, once on stderr, is a log line now
        assert any(r.get("logger") == "py.warnings" for r in records)


def test_api_writes_json_lines_only_with_the_access_log_in_fields(start_api: Any) -> None:
    """A real API's stdout (uvicorn's start-up and shutdown lines included) is JSON lines only,
    stderr is empty, and each request is one http.request line with method, masked path,
    route, status code and duration, in the request's trace."""
    api = start_api(NOTIFY_ACCESS_LOG="true")
    api.client.post("/send-sms", params={"phone": "+8613812345678", "msg": "hi"})
    api.client.post("/send-notification/bob@example.com")
    api.client.get("/healthz")
    wait_until(lambda: len(api.events("task.succeeded")) == 2)
    api.stop(signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    records = json_lines(api.stdout_path)
    assert api.stderr_path.read_text() == ""
    events = [record["event"] for record in records]
    for uvicorn_line in ("Started server process", "Uvicorn running on", "Finished server"):
        assert any(event.startswith(uvicorn_line) for event in events)
    sms, email = [r for r in records if r["event"] == "http.request"]  # no probe line
    assert (sms["method"], sms["route"], sms["status_code"]) == ("POST", "/send-sms", 200)
    assert sms["path"] == "/send-sms?phone=***&msg=***"
    assert email["path"] == "/send-notification/b***@example.com"
    assert email["route"] == "/send-notification/{email}"
    for access in (sms, email):
        assert 0 < access["duration_seconds"] < 10 and len(access["trace_id"]) == 32
        assert access["logger"] == "observability.http"
    assert "bob@example.com" not in api.raw_output()
    assert all(r.get("logger") != "uvicorn.access" for r in records)


def test_message_key_is_a_setting(start_service: Any) -> None:
    """NOTIFY_LOG_MESSAGE_KEY names the key the event is copied under; empty: none."""
    renamed = start_service(NOTIFY_LOG_MESSAGE_KEY="msg")
    bare = start_service(NOTIFY_LOG_MESSAGE_KEY="")
    for service in (renamed, bare):
        service.client.post("/safe-notify")
        wait_until(lambda s=service: s.events("task.succeeded"))
    assert all(r["msg"] == r["event"] and "message" not in r for r in renamed.logs())
    assert all("msg" not in r and "message" not in r for r in bare.logs())


def test_masking_reaches_nested_fields_and_exception_text() -> None:
    """The masking processor masks addresses in nested values and exception text, keeps node
    names and our own fields."""
    event = {
        "event": "delivery to bob@example.com failed",
        "exception": 'Traceback ...\nValueError: refused "alice@mail.example.org"',
        "detail": {"to": ["carol@example.net", ("+8613812345678", 2)]},
        "node": "celery@worker-1.internal",
        "peer": "celery@vm",
    }
    masked = mask_personal_data(None, "info", event)
    assert masked["event"] == "delivery to b***@example.com failed"
    assert masked["exception"].endswith('refused "a***@mail.example.org"')
    assert masked["detail"] == {"to": ["c***@example.net", ("+86*******5678", 2)]}
    assert (masked["node"], masked["peer"]) == ("celery@worker-1.internal", "celery@vm")


def test_json_renderer_copies_the_event_under_the_message_key() -> None:
    """The JSON renderer writes one orjson line with the event under the message key too."""
    line = json_renderer("message")(None, "info", {"event": "task.succeeded", "n": 1})
    assert json.loads(line) == {"event": "task.succeeded", "n": 1, "message": "task.succeeded"}
    assert json.loads(json_renderer("")(None, "info", {"event": "x"})) == {"event": "x"}


def test_banner_hides_the_broker_password() -> None:
    """The worker.banner fields name the broker and result backend without their password."""
    app = Celery("banner", broker="redis://:hunter2@broker.internal:6379/0")
    app.conf.result_backend = "redis://:hunter2@results.internal:6379/1"
    worker = SimpleNamespace(  # what banner() reads of Celery's worker program
        app=app, hostname="celery@vm", concurrency=2, pool_cls="threads", task_events=False
    )
    fields = banner(worker)
    assert "hunter2" not in json.dumps(fields)
    assert fields["broker"] == "redis://:**@broker.internal:6379/0"
    assert (fields["node"], fields["concurrency"], fields["pool"]) == ("celery@vm", 2, "threads")
