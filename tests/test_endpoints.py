"""The tutorial endpoints against a real uvicorn process: sinks, responses, validation."""

from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def task_done(service: ServiceProcess, task_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = service.client.get(f"/tasks/{task_id}").json()
    return body if body.get("state") in {"succeeded", "failed", "timed_out", "dropped"} else None


@pytest.fixture
def service(start_service: Any) -> ServiceProcess:
    svc: ServiceProcess = start_service()
    return svc


def test_send_notification_writes_message_line(service: ServiceProcess) -> None:
    """POST /send-notification/{email} answers like the tutorial and appends one log.txt line."""
    response = service.client.post("/send-notification/user@example.com")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Notification sent in background"
    assert len(body["task_ids"]) == 1
    wait_until(lambda: task_done(service, body["task_ids"][0]))
    assert lines(service.data_dir / "log.txt") == ["message to user@example.com"]


def test_advanced_notification_runs_dependency_and_route_tasks(service: ServiceProcess) -> None:
    """The q task added in the dependency and the e-mail task share the request's batch."""
    response = service.client.post("/advanced-notification/a@example.org", params={"q": "hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "multi-task executed"
    assert len(body["task_ids"]) == 2
    for task_id in body["task_ids"]:
        wait_until(lambda task_id=task_id: task_done(service, task_id))
    assert sorted(lines(service.data_dir / "log.txt")) == ["Email: a@example.org", "Query: hi"]


def test_advanced_notification_without_q_adds_one_task(service: ServiceProcess) -> None:
    """Without q only the e-mail task is added."""
    body = service.client.post("/advanced-notification/a@example.org").json()
    assert len(body["task_ids"]) == 1
    wait_until(lambda: task_done(service, body["task_ids"][0]))
    assert lines(service.data_dir / "log.txt") == ["Email: a@example.org"]


def test_send_sms_static_method_writes_sms_log(service: ServiceProcess) -> None:
    """POST /send-sms runs the static method task and appends phone:msg to sms_log.txt."""
    response = service.client.post("/send-sms", params={"phone": "+8613812345678", "msg": "你好"})
    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "短信任务已排队"
    wait_until(lambda: task_done(service, body["task_ids"][0]))
    assert lines(service.data_dir / "sms_log.txt") == ["+8613812345678:你好"]


def test_send_sms_accepts_unencoded_plus(service: ServiceProcess) -> None:
    """A literal '+' in the query (decoded as a space by form rules) still means E.164 '+'."""
    response = service.client.post("/send-sms?phone=+15551234567&msg=x")
    assert response.status_code == 200
    wait_until(lambda: task_done(service, response.json()["task_ids"][0]))
    assert lines(service.data_dir / "sms_log.txt") == ["+15551234567:x"]


def test_safe_notify_writes_fixed_entry(service: ServiceProcess) -> None:
    """POST /safe-notify appends the tutorial's fixed entry."""
    response = service.client.post("/safe-notify")
    assert response.json()["status"] == "error-handled"
    wait_until(lambda: task_done(service, response.json()["task_ids"][0]))
    assert lines(service.data_dir / "log.txt") == ["安全日志条目"]


def test_user_text_cannot_forge_lines(service: ServiceProcess) -> None:
    """Line breaks in user text are escaped: one request, one line."""
    body = service.client.post(
        "/send-sms", params={"phone": "+8613812345678", "msg": "a\nb\r\n+1:forged"}
    ).json()
    wait_until(lambda: task_done(service, body["task_ids"][0]))
    assert lines(service.data_dir / "sms_log.txt") == ["+8613812345678:a\\nb\\r\\n+1:forged"]


@pytest.mark.parametrize(
    ("method", "url", "params", "field"),
    [
        ("POST", "/send-notification/not-an-email", {}, "email"),
        ("POST", "/advanced-notification/x@", {}, "email"),
        ("POST", "/advanced-notification/a@example.org", {"q": "x" * 1001}, "q"),
        ("POST", "/send-sms", {"phone": "12345", "msg": "x"}, "phone"),
        ("POST", "/send-sms", {"phone": "+0123456789", "msg": "x"}, "phone"),
        ("POST", "/send-sms", {"phone": "+8613812345678"}, "msg"),
        ("POST", "/send-sms", {"phone": "+8613812345678", "msg": "x" * 1001}, "msg"),
        ("POST", "/send-sms", {"phone": "+8613812345678", "msg": ""}, "msg"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    service: ServiceProcess, method: str, url: str, params: dict[str, str], field: str
) -> None:
    """Invalid e-mail, non-E.164 phone, missing/over-long text: 422 JSON naming the field."""
    response = service.client.request(method, url, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert any(error["loc"][-1] == field for error in response.json()["detail"])


def test_task_lookup_reports_state_and_timestamps(service: ServiceProcess) -> None:
    """GET /tasks/{id} returns state, enqueue/start/end timestamps and duration."""
    task_id = service.client.post("/safe-notify").json()["task_ids"][0]
    record = wait_until(lambda: task_done(service, task_id))
    assert record["state"] == "succeeded"
    assert record["name"] == "safe_write_log"
    assert record["enqueued_at"] <= record["started_at"] <= record["finished_at"]
    assert record["duration_seconds"] >= 0
    assert record["error_type"] is None


def test_unknown_task_is_404_json(service: ServiceProcess) -> None:
    """An unknown or forgotten task id is a 404 whose JSON says why."""
    response = service.client.get("/tasks/does-not-exist")
    assert response.status_code == 404
    assert "most recent tasks" in response.json()["detail"]


def test_probes(service: ServiceProcess) -> None:
    """/healthz and /readyz answer 200 while running."""
    assert service.client.get("/healthz").json() == {"status": "ok"}
    assert service.client.get("/readyz").json() == {"status": "ready"}


def test_task_registry_and_memory_stay_bounded(start_service: Any) -> None:
    """The task registry forgets beyond NOTIFY_TASK_HISTORY_SIZE; memory does not grow with load."""
    service = start_service(NOTIFY_TASK_HISTORY_SIZE="50")
    first = service.client.post("/safe-notify").json()["task_ids"][0]

    def rss() -> float:
        return service.value("process_resident_memory_bytes")

    for _ in range(200):  # warm up allocators and caches
        service.client.post("/send-notification/a@example.com")
    before = rss()
    last = ""
    for _ in range(2000):
        last = service.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    wait_until(lambda: task_done(service, last))
    assert service.client.get(f"/tasks/{first}").status_code == 404
    assert service.client.get(f"/tasks/{last}").status_code == 200
    assert rss() - before < 20 * 1024 * 1024
