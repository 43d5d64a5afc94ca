"""The in-process backlog seen from HTTP: a full backlog answers 503 and counts the refusal, a
slow task never holds its response. Runs block on ``log.txt`` made a FIFO until a reader comes."""

from pathlib import Path
from typing import Any

from tests.support.fifo import FifoReader, make_fifo
from tests.support.metrics import sample_value
from tests.support.polling import wait_until


def test_backlog_full_is_503_and_counted(start_service: Any, tmp_path: Path) -> None:
    """With the backlog full a request is refused with 503 + Retry-After, and counted."""
    fifo = make_fifo(tmp_path / "data")
    service = start_service(NOTIFY_TASK_CONCURRENCY="1", NOTIFY_TASK_BACKLOG="2")
    first = service.client.post("/send-notification/a@example.com")
    assert first.status_code == 200
    # the first run has left the backlog (it blocks on the FIFO) before the next two fill it
    running = first.json()["task_ids"][0]
    wait_until(lambda: service.client.get(f"/tasks/{running}").json()["state"] == "running")
    accepted = [service.client.post("/send-notification/a@example.com") for _ in range(2)]
    assert [r.status_code for r in accepted] == [200, 200]  # 1 running + 2 waiting
    refused = service.client.post("/advanced-notification/a@example.com", params={"q": "x"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["reason"] == "backlog_full"
    text = service.metrics()
    assert (
        sample_value(
            text,
            "background_task_dropped_total",
            task="write_log",
            backend="inprocess",
            reason="backlog_full",
        )
        == 2
    )
    assert (
        sample_value(text, "background_task_queue_depth", backend="inprocess", queue="default") == 2
    )
    assert (
        sample_value(
            text,
            "background_task_oldest_pending_timestamp_seconds",
            backend="inprocess",
            queue="default",
        )
        > 0
    )
    for task_id in refused.json()["task_ids"]:
        assert service.client.get(f"/tasks/{task_id}").json()["state"] == "dropped"
    assert len(service.events("task.dropped")) == 2
    FifoReader(fifo, seconds=20)
    wait_until(
        lambda: (
            service.value(
                "background_task_finished_total",
                task="write_log",
                backend="inprocess",
                outcome="success",
            )
            == 3
        )
    )
    assert service.value("background_task_queue_depth", backend="inprocess", queue="default") == 0


def test_slow_task_never_holds_the_response(start_service: Any, tmp_path: Path) -> None:
    """The response and its latency sample are done while the task is still running."""
    fifo = make_fifo(tmp_path / "data")  # the task blocks until a reader comes
    service = start_service()
    response = service.client.post("/safe-notify")
    assert response.status_code == 200
    task_id = response.json()["task_ids"][0]
    wait_until(lambda: service.client.get(f"/tasks/{task_id}").json()["state"] == "running")
    text = service.metrics()
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="POST",
            route="/safe-notify",
            status_code="200",
        )
        == 1
    )
    assert sample_value(text, "http_server_active_requests", method="POST") == 0
    assert (
        sample_value(
            text, "background_task_in_progress", task="safe_write_log", backend="inprocess"
        )
        == 1
    )
    FifoReader(fifo, seconds=2)
    wait_until(lambda: service.client.get(f"/tasks/{task_id}").json()["state"] == "succeeded")
