"""Delivery on Celery under failure: a worker SIGKILLed in the middle of a burst (the tasks it
held come back after the visibility timeout and a new worker delivers them, duplicates only in
the documented window), and permanent errors (SMTP 550, HTTP 400) never retried."""

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.delivery import channel_servers, error_lines
from tests.support.polling import wait_until
from tests.support.processes import kill_worker
from tests.support.sms_provider import SmsProvider
from tests.support.smtp_server import SmtpServer
from tests.test_delivery_burst import (
    SMS_FAULT,
    SMTP_FAULT,
    TOKEN,
    all_delivered,
    celery_env,
    post_burst,
)

pytestmark = pytest.mark.e2e

CONCURRENCY = 4
VISIBILITY = 5


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SmtpServer, SmsProvider]]:
    with channel_servers(tmp_path) as servers:
        yield servers


def unacked_older_than(client: redis.Redis, seconds: float) -> bool:
    """Whether every message in kombu's index of unacknowledged ones was taken ``seconds``
    ago (and there is one)."""
    taken = client.zrange("unacked_index", 0, -1, withscores=True)
    return bool(taken) and all(time.time() - score > seconds for _, score in taken)


def test_worker_sigkill_mid_burst_redelivers_and_duplicates_only_in_the_window(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    servers: tuple[SmtpServer, SmsProvider],
) -> None:
    """SIGKILL of a prefork worker (main process and children) mid-burst; a new worker gets
    the unacknowledged tasks after the visibility timeout: every accepted message delivered,
    at most one duplicate e-mail per run in flight at the kill, one SMS per key; redelivered
    tasks the ledger knew were skipped, not sent again."""
    smtp, provider = servers
    smtp.script(every=SMTP_FAULT)
    provider.script(every=SMS_FAULT)
    env = celery_env(
        smtp,
        provider,
        tmp_path,
        broker_url,
        CONCURRENCY,
        NOTIFY_BROKER_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY),
        NOTIFY_TASK_TIMEOUT_SECONDS="60",
    )
    first = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    emails, sms = 400, 200
    mail_ids, sms_ids = post_burst(api.url, emails, sms)
    wait_until(lambda: len(smtp.messages()) >= 100, timeout=60, what="the burst under way")
    kill_worker(first)
    before = len(smtp.messages())
    assert before < emails, "the burst ended before the kill: nothing to redeliver"
    client = redis.Redis.from_url(broker_url)
    wait_until(lambda: unacked_older_than(client, VISIBILITY + 0.5), timeout=VISIBILITY + 15)
    client.close()
    second = start_worker(**env)
    wait_until(lambda: all_delivered(smtp, provider, emails, sms), timeout=120, interval=0.5)
    copies = Counter(m["message_id"] for m in smtp.messages())
    assert set(copies) == {f"<{t}@example.org>" for t in mail_ids}
    duplicates = sum(copies.values()) - len(copies)
    assert duplicates <= CONCURRENCY, copies.most_common(CONCURRENCY + 1)
    assert provider.delivered_keys() == set(sms_ids)
    # redelivered tasks the ledger had recorded were not sent again
    redelivered = {e["task_id"] for e in second.events("task.redelivered")}
    assert redelivered, "nothing was redelivered"
    skipped = second.events("delivery.skipped")
    assert {e["task_id"] for e in skipped} <= redelivered
    for event in skipped:
        if event["channel"] == "smtp":
            assert copies[f"<{event['task_id']}@example.org>"] == 1
    for channel in ("smtp", "http"):
        expected = len([e for e in skipped if e["channel"] == channel])
        assert second.value("notification_delivery_skipped_total", channel=channel) == expected
    print(
        f"killed after {before} e-mails; redelivered {len(redelivered)}, "
        f"skipped {len(skipped)}, duplicate e-mails {duplicates}"
    )


def test_permanent_errors_are_not_retried_on_celery(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    servers: tuple[SmtpServer, SmsProvider],
) -> None:
    """SMTP 550 and HTTP 400 on a Celery worker: one attempt each, outcome failure (no
    retry), DeliveryRejected, an error.log line each; nothing delivered."""
    smtp, provider = servers
    smtp.script(faults=[{"stage": "rcpt", "reply": "550 5.1.1 No such user"}])
    provider.script(rules=[{"status": 400}])
    env = celery_env(smtp, provider, tmp_path, broker_url, 2)
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    mail = api.client.post("/send-notification/nobody@example.com").json()["task_ids"][0]
    sms = api.client.post("/send-sms", params={"phone": "+8613812345678", "msg": "x"})
    sms_id = sms.json()["task_ids"][0]

    def failed(task: str) -> float:
        return worker.value(
            "background_task_finished_total", task=task, backend="celery", outcome="failure"
        )

    wait_until(lambda: failed("write_log") == 1 and failed("sms_task") == 1, timeout=30)
    for task in ("write_log", "sms_task"):
        labels = {"task": task, "backend": "celery", "outcome": "retry"}
        assert worker.value("background_task_finished_total", **labels) == 0
    for channel in ("smtp", "http"):
        labels = {"channel": channel, "result": "permanent_error"}
        assert worker.value("notification_delivery_attempts_total", **labels) == 1
        assert worker.value("notification_delivery_errors_total", channel=channel) == 1
    assert [e["stage"] for e in smtp.events("fault")] == ["rcpt"]
    assert smtp.messages() == []
    assert [r["status"] for r in provider.requests()] == [400]
    assert [r["idempotency_key"] for r in provider.requests()] == [sms_id]
    lines = error_lines(api.data_dir)
    assert len(lines) == 2 and all("DeliveryRejected" in line for line in lines)
    assert {f"id={mail} outcome=failure", f"id={sms_id} outcome=failure"} == {
        line.split("(task=")[1].split(" ", 1)[1].rstrip(")") for line in lines
    }
    assert TOKEN not in "\n".join(lines)
