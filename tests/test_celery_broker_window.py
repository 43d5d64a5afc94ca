"""A worker killed right after Redis handed it a message does not lose that message (kombu's
stock Redis consumer does: celery/kombu#305): the message waits in the consumer's own list and
is put back once that consumer is gone."""

import os
import signal
from pathlib import Path
from typing import Any

import redis

from observability.backends.reliable_redis import PROCESSING_PREFIX
from tests.support.polling import wait_until
from tests.support.processes import kill_worker


def blocked_in_blmove(client: "redis.Redis[bytes]") -> bool:
    listing = client.execute_command("CLIENT", "LIST").decode()
    return any("cmd=blmove" in line for line in listing.splitlines())


def held_by_consumers(client: "redis.Redis[bytes]") -> int:
    return sum(client.llen(key) for key in client.scan_iter(match=PROCESSING_PREFIX + "*"))


def test_a_message_taken_by_a_worker_killed_before_recording_it_is_run_by_another(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """Worker frozen in its blocking read, one task published (Redis hands it over), worker
    SIGKILLed before it could record the message as unacknowledged: a second worker runs it."""
    env = {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_CONCURRENCY": "1",
        "NOTIFY_BROKER_VISIBILITY_TIMEOUT_SECONDS": "5",
    }
    client = redis.Redis.from_url(broker_url)
    first = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    wait_until(lambda: blocked_in_blmove(client), what="the worker to wait for a message")
    os.kill(first.process.pid, signal.SIGSTOP)
    task_id = api.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    wait_until(lambda: held_by_consumers(client) == 1, what="Redis to hand the message over")
    assert client.llen("celery") == 0 and client.hlen("unacked") == 0
    kill_worker(first)
    second = start_worker(**env)
    log = api.data_dir / "log.txt"
    wait_until(lambda: log.exists() and task_id in second.raw_output(), timeout=120)
    assert log.read_text().splitlines() == ["message to a@example.com"]
    assert held_by_consumers(client) == 0
