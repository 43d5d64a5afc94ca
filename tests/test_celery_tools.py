"""What Celery's own tools see of a task (issue 19): a real worker, a real events receiver
(``celery.events.EventReceiver``, what Flower and celery-exporter use), real ``inspect``
answers and a real Flower process. Each task shows under its own name; its arguments, the data
folder, the trace context and the run's error messages show nowhere."""

import json
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from celery.events.state import State

from observability.backends.celery_error import WITHHELD, stand_in
from tests.support.fifo import FifoReader, make_fifo
from tests.support.polling import NOT_READY, wait_until
from tests.support.processes import (
    ChildProcess,
    ServiceProcess,
    WorkerProcess,
    free_port,
    start_processes,
    worker_command,
)

EMAIL = "celery.tools.user@example.com"
PHONE = "+8613812345678"
SMS_TEXT = "sms-text-for-celery-tools"
QUERY_TEXT = "query-text-for-celery-tools"


def secrets(data_dir: Path) -> list[str]:
    """What must never show: the user's values, message text, the data folder, trace context."""
    values = [EMAIL, "celery.tools.user", PHONE[1:], SMS_TEXT, QUERY_TEXT, "message to", "Email:"]
    return [*values, str(data_dir), "traceparent", "trace_context", "enqueued_at"]


def assert_clean(what: str, answer: Any, data_dir: Path) -> None:
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    leaked = [secret for secret in secrets(data_dir) if secret in text]
    assert not leaked, f"{what} shows {leaked}: {text[:3000]}"


def tools_app(broker_url: str) -> Celery:
    """A plain Celery app on the broker, as a monitoring tool makes one."""
    return Celery("celery-tools-test", broker=broker_url, backend=broker_url)


class EventLog:
    """Every Celery event on the broker, received by ``celery.events.EventReceiver`` in a
    thread, from the moment it is subscribed."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()
        self._subscribed()

    def _capture(self) -> None:
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _subscribed(self) -> None:
        """Send probe events until one comes back: the receiver listens from then on."""
        with self.app.events.default_dispatcher() as dispatcher:

            def probed() -> bool:
                dispatcher.send("worker-probe")
                return any(event["type"] == "worker-probe" for event in list(self.events))

            wait_until(probed, timeout=20, what="the events receiver to subscribe", interval=0.2)

    def of(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("uuid") == task_id and e["type"] == kind]

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.release()


@pytest.fixture
def event_log(broker_url: str) -> Iterator[EventLog]:
    log = EventLog(tools_app(broker_url))
    yield log
    log.stop()


def channel_env(tmp_path: Path, broker_url: str) -> dict[str, str]:
    """E-mail over SMTP to a closed port (retried once, then failed), SMS to the file channel."""
    return {
        "NOTIFY_DATA_DIR": str(tmp_path / "data"),
        "NOTIFY_BROKER_URL": broker_url,
        "NOTIFY_TASK_CONCURRENCY": "2",
        "NOTIFY_TASK_MAX_RETRIES": "1",
        "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "0.05",
        "NOTIFY_EMAIL_CHANNEL": "smtp",
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": str(free_port()),
        "NOTIFY_SMTP_SECURITY": "none",
    }


def post_tasks(api: ServiceProcess) -> dict[str, str]:
    """One of each: an e-mail that fails transiently (retry, then failure), an SMS whose sink
    is a directory (failure naming a path in the data folder), a query line and the safe entry
    (successes). Returns task ids by what they are."""
    (api.data_dir / "sms_log.txt").mkdir(parents=True)
    email = api.client.post(f"/send-notification/{EMAIL}").json()["task_ids"][0]
    sms = api.client.post("/send-sms", params={"phone": PHONE, "msg": SMS_TEXT})
    query = api.client.post(f"/advanced-notification/{EMAIL}", params={"q": QUERY_TEXT})
    safe = api.client.post("/safe-notify").json()["task_ids"][0]
    return {
        "email": email,
        "sms": sms.json()["task_ids"][0],
        "query": query.json()["task_ids"][0],
        "advanced_email": query.json()["task_ids"][1],
        "safe": safe,
    }


def test_task_events_are_named_masked_and_sent_for_queued_tasks(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    event_log: EventLog,
) -> None:
    """NOTIFY_CELERY_TASK_EVENTS=true: task-sent arrives for tasks still queued, every event
    names the task (write_log vs sms_task) and no field holds a user value, the data folder,
    the trace context or an error message; the result backend neither."""
    env = channel_env(tmp_path, broker_url) | {"NOTIFY_CELERY_TASK_EVENTS": "true"}
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    ids = post_tasks(api)
    # no worker yet: queued tasks show
    wait_until(lambda: all(event_log.of(i, "task-sent") for i in ids.values()), what="task-sent")
    start_worker(**env)
    final = {"email": "task-failed", "sms": "task-failed", "advanced_email": "task-failed"}
    wait_until(
        lambda: all(event_log.of(i, final.get(k, "task-succeeded")) for k, i in ids.items()),
        what="every task's last event",
    )
    assert event_log.of(ids["email"], "task-retried")

    def name_of(kind: str, event: str) -> str:
        return str(event_log.of(ids[kind], event)[0]["name"])

    assert name_of("email", "task-sent") == name_of("email", "task-received")
    assert name_of("email", "task-received") == "background_task.write_log"
    assert name_of("sms", "task-sent") == name_of("sms", "task-received")
    assert name_of("sms", "task-received") == "background_task.sms_task"
    assert event_log.of(ids["sms"], "task-sent")[0]["args"] == "('***', '***')"
    assert "IsADirectoryError" in event_log.of(ids["sms"], "task-failed")[0]["exception"]
    state = State()  # how Flower and celery-exporter read the events
    for event in event_log.events:
        if event["type"].startswith("task-"):
            state.event(event)
    assert state.tasks[ids["sms"]].name == "background_task.sms_task"
    assert state.tasks[ids["safe"]].name == "background_task.safe_write_log"
    kinds = {event["type"] for event in event_log.events}
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= kinds
    assert {"task-failed", "task-retried"} <= kinds
    assert_clean("Celery's events", event_log.events, api.data_dir)
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    stored = [str(client.get(key)) for key in client.keys("celery-task-meta-*")]
    client.close()
    assert len(stored) == len(ids)
    assert_clean("the result backend", stored, api.data_dir)
    record = api.client.get(f"/tasks/{ids['sms']}").json()
    assert record["state"] == "failed" and record["error_type"] == "IsADirectoryError"


def test_task_sent_is_off_with_events_off(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    event_log: EventLog,
) -> None:
    """By default the API sends no task-sent: a task's events start with the worker's."""
    env = {"NOTIFY_DATA_DIR": str(tmp_path / "data"), "NOTIFY_BROKER_URL": broker_url}
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    task_id = api.client.post("/safe-notify").json()["task_ids"][0]
    start_worker(**env, NOTIFY_CELERY_TASK_EVENTS="true")
    # published (and task-sent with it, if any) before the answer: events come in order
    wait_until(lambda: event_log.of(task_id, "task-succeeded"))
    assert not event_log.of(task_id, "task-sent")
    assert event_log.of(task_id, "task-received")[0]["name"] == "background_task.safe_write_log"


def test_inspect_answers_name_tasks_and_mask_their_arguments(
    start_service: Any, start_worker: Any, broker_url: str, tmp_path: Path
) -> None:
    """``inspect active/scheduled/reserved/query_task/stats`` name each task, show the masked
    arguments of a running task and of a retry waiting for its countdown, never the message."""
    env = channel_env(tmp_path, broker_url) | {
        "NOTIFY_TASK_TIMEOUT_SECONDS": "60",
        "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "60",
        "NOTIFY_TASK_RETRY_MAX_BACKOFF_SECONDS": "60",
    }
    worker = start_worker(**env)
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    fifo = make_fifo(api.data_dir)  # the safe entry's run blocks on it
    running = api.client.post("/safe-notify").json()["task_ids"][0]
    retried = api.client.post(f"/send-notification/{EMAIL}").json()["task_ids"][0]
    inspect = tools_app(broker_url).control.inspect(timeout=2)
    node = wait_until(lambda: inspect.ping(), what="the worker's ping answer")
    assert len(node) == 1
    scheduled = wait_until(lambda: [s for a in (inspect.scheduled() or {}).values() for s in a])
    active = wait_until(lambda: only_running(inspect.active() or {}, running))
    queried = inspect.query_task(running, retried) or {}
    stats = inspect.stats() or {}
    reserved = inspect.reserved() or {}
    assert [(r["name"], r["args"], r["kwargs"]) for r in active] == [
        ("background_task.safe_write_log", "('***',)", "{}")
    ]
    waiting = scheduled[0]["request"]  # the e-mail's retry, waiting for its countdown
    assert (waiting["id"], waiting["name"]) == (retried, "background_task.write_log")
    assert (waiting["args"], waiting["kwargs"]) == ("('***',)", "{'to': '***'}")
    assert running in next(iter(queried.values()))
    totals = next(iter(stats.values()))["total"]
    assert totals == {"background_task.safe_write_log": 1, "background_task.write_log": 1}
    for what, answer in [("active", active), ("scheduled", scheduled), ("query", queried)]:
        assert_clean(f"inspect {what}", answer, api.data_dir)
    assert_clean("inspect reserved", reserved, api.data_dir)
    reader = FifoReader(fifo)
    try:
        wait_until(lambda: reader.read())
    finally:
        reader.stop()
    finished = {"task": "safe_write_log", "backend": "celery", "outcome": "success"}
    wait_until(lambda: worker.value("background_task_finished_total", **finished) == 1)


def only_running(active: dict[str, list[dict[str, Any]]], task_id: str) -> list[dict[str, Any]]:
    """The ``inspect active`` requests, once ``task_id``'s is the only one."""
    requests = [request for answer in active.values() for request in answer]
    return requests if [r["id"] for r in requests] == [task_id] else []


class PlainWorker(WorkerProcess):
    """The worker as ``celery -A service.worker worker`` runs it by default: with heartbeats,
    so its event dispatcher is up and Flower can turn task events on by remote control."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.metrics_port = free_port()
        command = worker_command(f"plain-{self.metrics_port}")
        command.remove("--without-heartbeat")
        ChildProcess.__init__(
            self,
            command,
            tmp_path / f"worker-{self.metrics_port}.log",
            {"NOTIFY_WORKER_METRICS_PORT": str(self.metrics_port)} | env,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.metrics_port}", timeout=10)
        wait_until(self.ready, timeout=30, what="the worker to be ready")


class FlowerProcess(ChildProcess):
    """``celery --broker=... flower`` on a free port, its REST API open (no auth: tests only)."""

    def __init__(self, tmp_path: Path, broker_url: str) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "celery", f"--broker={broker_url}"]
        command += [f"--result-backend={broker_url}", "flower", f"--port={self.port}"]
        command += ["--address=127.0.0.1"]
        env = {"FLOWER_UNAUTHENTICATED_API": "true", "HOME": str(tmp_path)}
        super().__init__(command, tmp_path / f"flower-{self.port}.log", env, name="flower")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        wait_until(self.healthy, timeout=30, what="flower to answer", ignore=NOT_READY)

    def healthy(self) -> bool:
        self.check_alive()
        return self.client.get("/healthcheck").text == "OK"

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json() if "json" in response.headers["content-type"] else response.text

    def close(self) -> None:
        super().close()
        self.client.close()


@pytest.fixture
def flower(tmp_path: Path, broker_url: str) -> Iterator[FlowerProcess]:
    process = FlowerProcess(tmp_path, broker_url)
    yield process
    process.terminate()


@pytest.fixture
def start_plain_worker(tmp_path: Path) -> Iterator[Callable[..., PlainWorker]]:
    yield from start_processes(PlainWorker, tmp_path)


def test_flower_shows_task_names_and_no_personal_data(
    start_service: Any,
    start_plain_worker: Any,
    broker_url: str,
    tmp_path: Path,
    flower: FlowerProcess,
) -> None:
    """With task events off, Flower turns the workers' on by remote control; its task list,
    task pages, results and worker answers then name each task and show no user value, data
    folder, trace context or error message."""
    env = channel_env(tmp_path, broker_url)
    worker = start_plain_worker(**env)
    wait_until(lambda: "enabled by remote" in worker.raw_output(), what="Flower's enable_events")
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    ids = post_tasks(api)
    states = {"email": "FAILURE", "sms": "FAILURE", "advanced_email": "FAILURE"}

    def listed() -> dict[str, Any] | None:
        tasks: dict[str, Any] = flower.get("/api/tasks")
        done = all(
            tasks.get(task_id, {}).get("state") == states.get(kind, "SUCCESS")
            for kind, task_id in ids.items()
        )
        return tasks if done else None

    tasks = wait_until(listed, what="Flower to list every task in its final state")
    assert tasks[ids["email"]]["name"] == "background_task.write_log"
    assert tasks[ids["sms"]]["name"] == "background_task.sms_task"
    assert tasks[ids["sms"]]["args"] == "('***', '***')"
    assert tasks[ids["sms"]]["exception"].startswith("IsADirectoryError(")
    assert_clean("Flower's task list", tasks, api.data_dir)
    for task_id in ids.values():
        assert_clean("Flower's task info", flower.get(f"/api/task/info/{task_id}"), api.data_dir)
        assert_clean("Flower's result", flower.get(f"/api/task/result/{task_id}"), api.data_dir)
        assert_clean("Flower's task page", flower.get(f"/task/{task_id}"), api.data_dir)
    workers = flower.get("/api/workers?refresh=1")
    assert "background_task.sms_task" in json.dumps(workers)  # registered, in stats
    assert_clean("Flower's workers", workers, api.data_dir)


def test_stand_in_keeps_the_class_name_and_survives_pickle_and_the_result_backend() -> None:
    """A run's error reaches Celery as a same-named stand-in that pickles (prefork children
    hand it to their main process) and that Celery's result backend rebuilds by name."""
    error = IsADirectoryError(21, "Is a directory", "/srv/data/sms_log.txt")
    replaced = stand_in(error)
    assert type(replaced).__name__ == "IsADirectoryError"
    assert "/srv/data" not in repr(replaced) and WITHHELD in repr(replaced)
    assert type(pickle.loads(pickle.dumps(replaced))) is type(replaced)
    backend = Celery("stand-in-test", backend="cache+memory://").backend
    rebuilt = backend.exception_to_python(backend.prepare_exception(replaced, "json"))
    assert type(rebuilt).__name__ == "IsADirectoryError" and rebuilt.args == (WITHHELD,)
    assert type(stand_in(KeyError("WITHHELD"))).__name__ == "KeyError"
    assert type(stand_in(type("WITHHELD", (Exception,), {})())).__name__ == "TaskError"
