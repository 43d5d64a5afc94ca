"""Bursts of e-mails and SMS on both backends, with the SMTP server and the SMS provider failing
part of the time (every 7th SMTP transaction 451, every 5th SMS 503): every accepted message is
delivered exactly once, counted once as a success, and the books balance. Also SIGTERM in the
middle of a burst in-process. Real processes throughout."""

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounting import wait_balanced
from tests.support.delivery import channel_servers, file_lines
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, WorkerProcess
from tests.support.sms_provider import SmsProvider
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.e2e

TOKEN = "burst-token-5a4b3c2d1e"
EMAILS, SMS = 1000, 500
RETRIES = {
    "NOTIFY_TASK_MAX_RETRIES": "8",  # every k-th failing: a task may be unlucky a few times
    "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "0.05",
    "NOTIFY_TASK_RETRY_MAX_BACKOFF_SECONDS": "0.5",
    "NOTIFY_DELIVERY_TIMEOUT_SECONDS": "10",
}
SMTP_FAULT = {"k": 7, "stage": "data", "reply": "451 4.3.0 Try again later"}
SMS_FAULT = {"k": 5, "status": 503}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SmtpServer, SmsProvider]]:
    with channel_servers(tmp_path) as (smtp, provider):
        smtp.script(every=SMTP_FAULT)
        provider.script(every=SMS_FAULT)
        yield smtp, provider


def channel_env(smtp: SmtpServer, provider: SmsProvider) -> dict[str, str]:
    return smtp.env() | provider.env(TOKEN) | {"NOTIFY_SMTP_FROM": "n@example.org"} | RETRIES


def celery_env(
    smtp: SmtpServer,
    provider: SmsProvider,
    tmp_path: Path,
    broker_url: str,
    concurrency: int,
    **extra: str,
) -> dict[str, str]:
    """``channel_env`` for a Celery API and its workers: one data dir, the broker, the pool."""
    return (
        channel_env(smtp, provider)
        | {
            "NOTIFY_DATA_DIR": str(tmp_path / "data"),
            "NOTIFY_BROKER_URL": broker_url,
            "NOTIFY_TASK_CONCURRENCY": str(concurrency),
        }
        | extra
    )


def post_burst(url: str, emails: int, sms: int) -> tuple[list[str], list[str]]:
    """``emails`` POST /send-notification and ``sms`` POST /send-sms, interleaved; the task
    ids accepted of each."""
    mail_ids: list[str] = []
    sms_ids: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(max(emails, sms)):
            if n < emails:
                response = client.post(f"/send-notification/u{n}@example.com")
                assert response.status_code == 200, response.text
                mail_ids += response.json()["task_ids"]
            if n < sms:
                response = client.post("/send-sms", params={"phone": "+8613812345678", "msg": n})
                assert response.status_code == 200, response.text
                sms_ids += response.json()["task_ids"]
    return mail_ids, sms_ids


def assert_exactly_once(
    smtp: SmtpServer, provider: SmsProvider, mail_ids: list[str], sms_ids: list[str]
) -> None:
    """Every accepted message at the servers once: no duplicate e-mail (distinct and raw),
    one SMS per key delivered."""
    ids = Counter(m["message_id"] for m in smtp.messages())
    assert set(ids) == {f"<{t}@example.org>" for t in mail_ids}
    assert [i for i, n in ids.items() if n > 1] == []
    assert sum(ids.values()) == len(mail_ids)
    assert provider.delivered_keys() == set(sms_ids)
    requests = provider.requests()
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in requests)
    assert smtp.events("fault") and any(r["status"] == 503 for r in requests)  # faults happened


def all_delivered(smtp: SmtpServer, provider: SmsProvider, emails: int, sms: int) -> bool:
    return (
        len({m["message_id"] for m in smtp.messages()}) >= emails
        and len(provider.delivered_keys()) >= sms
    )


def inprocess_finished(service: ServiceProcess, task: str, outcome: str) -> float:
    return service.value(
        "background_task_finished_total", task=task, backend="inprocess", outcome=outcome
    )


def test_inprocess_burst_delivers_each_message_exactly_once(
    start_service: Any, servers: tuple[SmtpServer, SmsProvider]
) -> None:
    """1000 e-mails and 500 SMS in-process with servers failing part of the time: all
    delivered exactly once, success counted once per task, the books balance."""
    smtp, provider = servers
    began = time.monotonic()
    service = start_service(**channel_env(smtp, provider))
    mail_ids, sms_ids = post_burst(service.url, EMAILS, SMS)
    wait_until(lambda: all_delivered(smtp, provider, EMAILS, SMS), timeout=120, interval=0.5)
    wait_until(lambda: inprocess_finished(service, "sms_task", "success") == SMS, timeout=30)
    wait_until(lambda: inprocess_finished(service, "write_log", "success") == EMAILS, timeout=30)
    books = wait_balanced(service, timeout=60)
    assert_exactly_once(smtp, provider, mail_ids, sms_ids)
    assert books.ledgers["write_log"].enqueued == EMAILS
    assert books.ledgers["sms_task"].enqueued == SMS
    assert inprocess_finished(service, "write_log", "failure") == 0
    assert inprocess_finished(service, "sms_task", "failure") == 0
    assert inprocess_finished(service, "write_log", "retry") == len(smtp.events("fault"))
    assert len(file_lines(service.data_dir / "log.txt")) == EMAILS
    assert len(file_lines(service.data_dir / "sms_log.txt")) == SMS
    print(f"in-process burst: {time.monotonic() - began:.1f}s")


def celery_books(api: ServiceProcess, worker: WorkerProcess, task: str) -> dict[str, float]:
    """The accounting across the API (enqueued, queue depth) and the worker (outcomes)."""

    def worker_value(name: str, **labels: str) -> float:
        return worker.value(name, task=task, backend="celery", **labels)

    return {
        "enqueued": api.value("background_task_enqueued_total", task=task, backend="celery"),
        "dropped": api.value("background_task_dropped_total", task=task, backend="celery"),
        "success": worker_value("background_task_finished_total", outcome="success"),
        "failure": worker_value("background_task_finished_total", outcome="failure"),
        "timeout": worker_value("background_task_finished_total", outcome="timeout"),
        "retry": worker_value("background_task_finished_total", outcome="retry"),
        "in_progress": worker_value("background_task_in_progress"),
    }


def test_celery_burst_delivers_each_message_exactly_once(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    servers: tuple[SmtpServer, SmsProvider],
) -> None:
    """The same burst on Celery (a prefork worker, 4 processes): all delivered exactly once,
    enqueued (API) == success (worker) per task, nothing failed, left in progress or queued."""
    smtp, provider = servers
    began = time.monotonic()
    env = celery_env(smtp, provider, tmp_path, broker_url, 4)
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    mail_ids, sms_ids = post_burst(api.url, EMAILS, SMS)
    wait_until(lambda: all_delivered(smtp, provider, EMAILS, SMS), timeout=180, interval=0.5)
    for task, count in (("write_log", EMAILS), ("sms_task", SMS)):

        def settled(task: str = task, count: int = count) -> dict[str, float] | None:
            books = celery_books(api, worker, task)
            done = books["success"] + books["failure"] + books["timeout"]
            return (
                books if done == books["enqueued"] == count and not books["in_progress"] else None
            )

        books = wait_until(settled, timeout=60, what=f"{task} runs to settle")
        assert books["success"] == count and books["failure"] == books["dropped"] == 0
    wait_until(
        lambda: api.value("background_task_queue_depth", backend="celery", queue="celery") == 0,
        timeout=10,
    )
    assert_exactly_once(smtp, provider, mail_ids, sms_ids)
    ended = Counter(
        line["task_id"] for line in worker.logs() if line.get("event") == "task.succeeded"
    )
    assert set(ended) == set(mail_ids) | set(sms_ids) and set(ended.values()) == {1}
    assert celery_books(api, worker, "write_log")["retry"] == len(smtp.events("fault"))
    assert worker.value("notification_delivery_skipped_total", channel="smtp") == 0
    assert len(file_lines(api.data_dir / "log.txt")) == EMAILS
    print(f"Celery burst: {time.monotonic() - began:.1f}s")


def test_sigterm_mid_burst_delivers_every_accepted_message_once(
    start_service: Any, servers: tuple[SmtpServer, SmsProvider]
) -> None:
    """SIGTERM while SMTP deliveries are held: requests during the drain get 503 and are never
    delivered; every accepted e-mail and SMS is delivered exactly once before the exit."""
    smtp, provider = servers
    smtp.script(faults=[{"stage": "data", "reply": "hold", "count": 4}], every=SMTP_FAULT)
    service = start_service(
        **channel_env(smtp, provider),
        NOTIFY_TASK_CONCURRENCY="4",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="120",
    )
    mail_ids, sms_ids = post_burst(service.url, 300, 100)
    wait_until(lambda: smtp.stats()["held"] == 4, what="4 deliveries held")  # all slots busy
    service.process.send_signal(signal.SIGTERM)
    wait_until(lambda: service.events("shutdown.draining"))
    refused: list[str] = []
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for n in range(5):  # the drain can't end yet: every slot is held
            response = client.post(f"/send-notification/late{n}@example.com")
            assert response.status_code == 503 and response.json()["reason"] == "shutdown"
            refused += response.json()["task_ids"]
            response = client.post("/send-sms", params={"phone": "+8613800000000", "msg": "x"})
            assert response.status_code == 503
            refused += response.json()["task_ids"]
        smtp.release()  # now the backlog drains
        for _ in range(100_000):  # until the server stops listening, once the drain is done
            try:
                response = client.post("/send-notification/later@example.com")
            except httpx.TransportError:
                break
            assert response.status_code == 503
            refused += response.json()["task_ids"]
    assert service.process.wait(120) in (0, -signal.SIGTERM)
    assert_exactly_once(smtp, provider, mail_ids, sms_ids)
    delivered = {m["message_id"] for m in smtp.messages()} | provider.delivered_keys()
    assert refused and not [
        t for t in refused if t in delivered or f"<{t}@example.org>" in delivered
    ]
    outcome = {
        line["task_id"]: line["event"]
        for line in service.logs()
        if line.get("event") in ("task.succeeded", "task.dropped")
    }
    assert {outcome[t] for t in mail_ids + sms_ids} == {"task.succeeded"}
    assert len(file_lines(service.data_dir / "log.txt")) == len(mail_ids)
