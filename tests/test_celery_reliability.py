"""Celery workers under the prefork pool: metrics that add up across child processes, a task
that survives the death of the process running it, permanent errors, and the broker going away
and coming back. Real Redis, real worker and API processes."""

import contextlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from observability.metrics import directory as metrics_dir
from tests.support.fifo import FifoReader
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import WorkerProcess, ephemeral_redis, free_port


def celery_env(tmp_path: Path, broker_url: str, **extra: str) -> dict[str, str]:
    return {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_CONCURRENCY": "2",
        **extra,
    }


def value(worker: WorkerProcess, name: str, task: str, **labels: str) -> float:
    return worker.value(name, task=task, backend="celery", **labels)


def finished(worker: WorkerProcess, task: str, outcome: str) -> float:
    return value(worker, "background_task_finished_total", task, outcome=outcome)


def test_prefork_children_add_up_on_the_worker_metrics(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """With 2 prefork children, one blocked and one running the rest, /metrics counts both."""
    env = celery_env(tmp_path, broker_url)
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    os.mkfifo(api.data_dir / "log.txt")  # the first child blocks opening it
    assert api.client.post("/safe-notify").status_code == 200
    wait_until(lambda: value(worker, "background_task_in_progress", "safe_write_log") == 1)
    for n in range(5):  # so these all run on the other child
        api.client.post("/send-sms", params={"phone": "+8613812345678", "msg": f"m{n}"})
    wait_until(lambda: finished(worker, "sms_task", "success") == 5)
    reader = FifoReader(api.data_dir / "log.txt")
    try:
        wait_until(lambda: reader.read() == "安全日志条目\n".encode())
    finally:
        reader.stop()
    wait_until(lambda: finished(worker, "safe_write_log", "success") == 1)
    assert value(worker, "background_task_started_total", "sms_task") == 5
    assert value(worker, "background_task_in_progress", "safe_write_log") == 0
    assert worker.value("background_task_capacity", backend="celery") == 2
    assert len((api.data_dir / "sms_log.txt").read_text().splitlines()) == 5
    text = worker.client.get("/metrics").text
    assert "background_task_queue_depth{" not in text  # the API exports it, never the worker


def started_pid(client: redis.Redis, task_id: str) -> int | None:
    """The pid Celery stored with the STARTED state of ``task_id`` (task_track_started)."""
    raw = client.get(f"celery-task-meta-{task_id}")
    meta = json.loads(raw) if raw else {}
    return int(meta["result"]["pid"]) if meta.get("status") == "STARTED" else None


def test_task_survives_the_death_of_its_process_and_runs_once(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """SIGKILL of the child running a task: redelivered, completes once, redelivery counted."""
    env = celery_env(tmp_path, broker_url, NOTIFY_TASK_TIMEOUT_SECONDS="60")
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    fifo = api.data_dir / "log.txt"
    os.mkfifo(fifo)  # the first run blocks opening it, before writing anything
    task_id = api.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    wait_until(lambda: value(worker, "background_task_started_total", "write_log") == 1)
    client = redis.Redis.from_url(broker_url)
    pid = wait_until(lambda: started_pid(client, task_id))
    client.close()
    fifo.rename(api.data_dir / "blocked.fifo")  # the next run finds no FIFO: a regular file
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: finished(worker, "write_log", "success") == 1, timeout=30)
    assert (api.data_dir / "log.txt").read_text() == "message to a@example.com\n"
    assert value(worker, "background_task_redelivered_total", "write_log") == 1
    assert value(worker, "background_task_started_total", "write_log") == 2
    assert finished(worker, "write_log", "failure") == 0
    wait_until(lambda: value(worker, "background_task_in_progress", "write_log") == 0)
    assert not (api.data_dir / "error.log").exists()
    redelivered = [e for e in worker.logs() if e.get("event") == "task.redelivered"]
    assert [e["task_id"] for e in redelivered] == [task_id]
    wait_until(lambda: api.client.get(f"/tasks/{task_id}").json()["state"] == "succeeded")


def test_a_run_killed_at_the_hard_time_limit_ends_as_timeout(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,
) -> None:
    """A child that can't take the soft limit (stopped) is killed at the hard one: timeout."""
    env = celery_env(tmp_path, broker_url, NOTIFY_TASK_TIMEOUT_SECONDS="1")
    worker = start_worker(**env, **otlp_env(otlp_receiver))
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    os.mkfifo(api.data_dir / "log.txt")
    task_id = api.client.post("/safe-notify").json()["task_ids"][0]
    wait_until(lambda: value(worker, "background_task_started_total", "safe_write_log") == 1)
    client = redis.Redis.from_url(broker_url)
    pid = wait_until(lambda: started_pid(client, task_id))
    client.close()
    os.kill(pid, signal.SIGSTOP)  # the soft limit's signal waits; the hard limit's SIGKILL not
    wait_until(lambda: finished(worker, "safe_write_log", "timeout") == 1, timeout=20)
    labels = {"exception": "HardTimeLimitExceeded"}
    assert value(worker, "background_task_failures_total", "safe_write_log", **labels) == 1
    wait_until(lambda: value(worker, "background_task_in_progress", "safe_write_log") == 0)
    assert f"id={task_id} outcome=timeout" in (api.data_dir / "error.log").read_text()
    timed_out = [e for e in worker.logs() if e.get("event") == "task.timed_out"]
    assert [e["error_type"] for e in timed_out] == ["HardTimeLimitExceeded"]
    wait_until(lambda: api.client.get(f"/tasks/{task_id}").json()["state"] == "timed_out")
    span = wait_until(lambda: otlp_receiver.named("process celery"))  # the run's CONSUMER span
    assert len(span) == 1  # the killed child's own span is lost; the main process's replaces it
    assert span_attributes(span[0])["background_task.outcome"] == "timeout"


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def unacked_older_than(client: redis.Redis, seconds: float) -> bool:
    """Whether kombu's index of unacknowledged messages holds one taken ``seconds`` ago."""
    taken = client.zrange("unacked_index", 0, -1, withscores=True)
    return bool(taken) and all(time.time() - score > seconds for _, score in taken)


def test_task_of_a_killed_worker_completes_once_on_another(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """SIGKILL of a whole worker mid-task: another worker gets it after the visibility timeout."""
    env = celery_env(
        tmp_path,
        broker_url,
        NOTIFY_TASK_TIMEOUT_SECONDS="60",
        NOTIFY_TASK_CONCURRENCY="1",
        NOTIFY_BROKER_VISIBILITY_TIMEOUT_SECONDS="2",
    )
    first = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    fifo = api.data_dir / "log.txt"
    os.mkfifo(fifo)
    task_id = api.client.post("/send-notification/a@example.com").json()["task_ids"][0]
    wait_until(lambda: value(first, "background_task_started_total", "write_log") == 1)
    children = children_of(first.process.pid)
    first.process.kill()  # the main process first: nobody is left to put the task back
    for child in children:
        os.kill(child, signal.SIGKILL)
    first.process.wait(10)
    metrics_dir.remove(Path(tempfile.gettempdir()) / f"notify-worker-metrics-{first.process.pid}")
    fifo.rename(api.data_dir / "blocked.fifo")
    client = redis.Redis.from_url(broker_url)  # the next worker's start-up sweep will see it
    wait_until(lambda: unacked_older_than(client, 2.5), timeout=10)
    client.close()
    second = start_worker(**env)
    wait_until(lambda: finished(second, "write_log", "success") == 1, timeout=30)
    assert (api.data_dir / "log.txt").read_text() == "message to a@example.com\n"
    assert value(second, "background_task_redelivered_total", "write_log") == 1
    assert value(second, "background_task_started_total", "write_log") == 1
    wait_until(lambda: api.client.get(f"/tasks/{task_id}").json()["state"] == "succeeded")


def test_permanent_errors_fail_once_transient_ones_retry(
    start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """With retries allowed, a TypeError (bad arguments in a message) is not retried."""
    env = celery_env(
        tmp_path,
        broker_url,
        NOTIFY_TASK_MAX_RETRIES="2",
        NOTIFY_TASK_RETRY_BACKOFF_SECONDS="0.05",
    )
    worker = start_worker(**env)
    publisher = Celery(broker=broker_url)
    task_id = "0123456789abcdef0123456789abcdef"
    envelope = {"name": "write_log", "args": [], "kwargs": {}, "id": task_id}
    publisher.send_task(
        "background_task.run",
        args=[envelope | {"enqueued_at": time.time(), "trace_context": {}}],
        task_id=task_id,
        queue="celery",
    )
    wait_until(lambda: finished(worker, "write_log", "failure") == 1, timeout=20)
    assert finished(worker, "write_log", "retry") == 0
    assert value(worker, "background_task_failures_total", "write_log", exception="TypeError") == 1
    errors = (Path(env["NOTIFY_DATA_DIR"]) / "error.log").read_text().splitlines()
    assert len(errors) == 1 and "TypeError" in errors[0] and "outcome=failure" in errors[0]
    publisher.close()


def test_broker_outage_is_503_then_recovers_without_restart(
    start_service: Any, start_worker: Any, tmp_path: Path
) -> None:
    """Redis stopped: /readyz 503, enqueue 503 counted; Redis back: ready, tasks run again."""
    port = free_port()
    with ephemeral_redis(tmp_path, port) as url:
        env = celery_env(tmp_path, url, NOTIFY_TASK_CONCURRENCY="1")
        worker = start_worker(**env)
        api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
        assert api.client.post("/send-notification/a@example.com").status_code == 200
        wait_until(lambda: finished(worker, "write_log", "success") == 1)
    wait_until(lambda: api.client.get("/readyz").status_code == 503)
    refused = api.client.post("/send-notification/b@example.com")
    assert refused.status_code == 503
    body = refused.json()
    assert body["reason"] == "enqueue_error" and body["task_ids"] and body["detail"]
    dropped = api.value(
        "background_task_dropped_total", task="write_log", backend="celery", reason="enqueue_error"
    )
    assert dropped == 1
    with ephemeral_redis(tmp_path, port):
        wait_until(lambda: api.client.get("/readyz").status_code == 200, timeout=20)
        assert api.client.post("/send-notification/c@example.com").status_code == 200
        wait_until(lambda: finished(worker, "write_log", "success") == 2, timeout=60)
        lines = (api.data_dir / "log.txt").read_text().splitlines()
        assert lines == ["message to a@example.com", "message to c@example.com"]
        worker.check_alive()
