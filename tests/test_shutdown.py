"""SIGTERM on a real uvicorn process: the drain, the grace period's end, a second SIGTERM; every
task accounted for from the logs. Runs block on ``log.txt`` made a FIFO until a reader comes."""

import signal
from pathlib import Path
from typing import Any

import httpx

from tests.support.accounting import books_from_logs
from tests.support.fifo import FifoReader, make_fifo
from tests.support.polling import wait_until


def test_sigterm_drains_backlog_and_accounts_every_task(start_service: Any, tmp_path: Path) -> None:
    """SIGTERM during a burst: while the backlog drains, HTTP is still served, readyz is 503 and
    new tasks are refused; every accepted task runs and writes its line, then the process
    exits."""
    fifo = make_fifo(tmp_path / "data")  # the first run blocks until the reader comes
    service = start_service(
        NOTIFY_TASK_CONCURRENCY="1",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="120",
        NOTIFY_LOG_TASK_LIFECYCLE="true",  # the invariant from the logs alone
    )
    accepted: list[str] = []
    refused = 0
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for _ in range(1000):
            accepted += client.post(
                "/advanced-notification/a@example.com", params={"q": "x"}
            ).json()["task_ids"]
        service.process.send_signal(signal.SIGTERM)
        wait_until(lambda: service.events("shutdown.draining"))
        for _ in range(5):  # the drain can't end yet: the first run still blocks
            response = client.post("/safe-notify")
            assert response.status_code == 503
            assert response.json()["reason"] == "shutdown"
            assert client.get("/readyz").status_code == 503
            refused += 1
        reader = FifoReader(fifo, seconds=120)  # now the backlog drains
        for _ in range(100_000):  # until the server stops listening, once the drain is done
            try:
                response = client.post("/safe-notify")
            except httpx.TransportError:
                break
            assert response.status_code == 503
            refused += 1
    assert service.process.wait(60) in (0, -signal.SIGTERM)
    written = reader.stop()
    logs = service.logs()
    outcome_of = {line["task_id"]: line["event"] for line in logs if "task_id" in line}
    assert {outcome_of[t] for t in accepted} == {"task.succeeded"}
    assert len(accepted) == 2000 and len(written) == len(accepted)
    books = books_from_logs(logs)  # the invariant, from the logs of the whole run
    assert not books.unbalanced(), books
    assert sum(ledger.enqueued for ledger in books.ledgers.values()) == len(accepted)
    # the request in flight as the server closed may have been handled without an answer
    refused_while_draining = sum(ledger.refused["shutdown"] for ledger in books.ledgers.values())
    assert refused <= refused_while_draining <= refused + 1
    assert any(line.get("event") == "shutdown.drained" for line in logs)


def test_grace_period_end_drops_what_never_ran(start_service: Any, tmp_path: Path) -> None:
    """When the grace period ends before the backlog has drained, the run under way is reported
    failed, every task that never ran is counted and logged as dropped (reason shutdown, with
    its id and name), and the process exits."""
    make_fifo(tmp_path / "data")  # no reader ever comes: the first run blocks for good
    service = start_service(
        NOTIFY_TASK_CONCURRENCY="1",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="0.3",
        NOTIFY_LOG_TASK_LIFECYCLE="true",  # the invariant from the logs alone
    )
    accepted: list[str] = []
    for _ in range(50):
        accepted += service.client.post(
            "/advanced-notification/a@example.com", params={"q": "x"}
        ).json()["task_ids"]
    running = accepted[0]
    wait_until(lambda: service.client.get(f"/tasks/{running}").json()["state"] == "running")
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) in (0, -signal.SIGTERM)
    logs = service.logs()
    ended = {line["task_id"]: line for line in logs if line.get("event", "").startswith("task.")}
    assert ended[running]["event"] == "task.failed"
    dropped = [ended[t] for t in accepted[1:]]
    assert all(line["event"] == "task.dropped" for line in dropped)
    assert all(line["reason"] == "shutdown" and line["accepted"] for line in dropped)
    assert {line["task"] for line in dropped} == {"write_log"}
    books = books_from_logs(logs)
    assert not books.unbalanced(), books
    assert any(line.get("event") == "backend.drain_timeout" for line in logs)


def test_second_sigterm_stops_waiting_for_the_drain(start_service: Any, tmp_path: Path) -> None:
    """A second SIGTERM ends the drain early; tasks that never ran are still counted."""
    fifo = make_fifo(tmp_path / "data")  # the first run blocks: the backlog can't drain
    service = start_service(NOTIFY_TASK_CONCURRENCY="1", NOTIFY_SHUTDOWN_GRACE_SECONDS="120")
    ids = [service.client.post("/safe-notify").json()["task_ids"][0] for _ in range(3)]
    service.process.send_signal(signal.SIGTERM)
    wait_until(lambda: service.client.get("/readyz").status_code == 503)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) in (0, -signal.SIGTERM)  # far less than the 120 s grace
    FifoReader(fifo, seconds=1)
    dropped = {e["task_id"] for e in service.events("task.dropped")}
    assert set(ids[1:]) <= dropped
