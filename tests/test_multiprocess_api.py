"""The API under ``uvicorn --workers 2`` with the in-process backend: prometheus-client's
multiprocess mode makes every process serve the totals of all, with or without a
``PROMETHEUS_MULTIPROC_DIR`` given."""

import tempfile
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from observability.metrics.multiprocess import readable_files
from tests.support.metrics import sample_value
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess


def send_one(url: str) -> int:
    """POST on a connection of its own (so the kernel may hand it to either API process)."""
    return httpx.post(f"{url}/send-notification/a@example.com", timeout=10).status_code


def test_multiprocess_api_metrics_are_totals_on_every_scrape(tmp_path: Path) -> None:
    """uvicorn --workers 2 with PROMETHEUS_MULTIPROC_DIR given: every scrape of /metrics shows
    all N tasks and requests."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    api = ServiceProcess(
        tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, ("--workers", "2")
    )
    try:
        assert_totals_on_every_scrape(api, metrics_dir)
    finally:
        assert api.stop() == 0


def test_workers_add_up_with_no_extra_environment(tmp_path: Path) -> None:
    """uvicorn --workers 2 with no PROMETHEUS_MULTIPROC_DIR: the server processes claim the
    directory of their supervisor on their own, and every scrape shows all N tasks."""
    api = ServiceProcess(tmp_path, {}, ("--workers", "2"))
    try:
        tmp = Path(tempfile.gettempdir())
        pattern = f"notify-api-metrics-{api.process.pid}-*"
        (metrics_dir,) = wait_until(lambda: list(tmp.glob(pattern)))
        assert_totals_on_every_scrape(api, metrics_dir)
    finally:
        assert api.stop() == 0


def test_directories_of_gone_supervisors_are_removed(tmp_path: Path) -> None:
    """A directory left by a supervisor that is gone is removed when the next one starts; the
    new one's processes never count its files."""
    tmp = tmp_path / "tmp"
    stale = tmp / "notify-api-metrics-999999999-1"  # no such process
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"stale")
    api = ServiceProcess(tmp_path, {"TMPDIR": str(tmp)}, ("--workers", "2"))
    try:
        (metrics_dir,) = wait_until(lambda: list(tmp.glob("notify-api-metrics-*")))
        assert metrics_dir.name.startswith(f"notify-api-metrics-{api.process.pid}-")
        assert_totals_on_every_scrape(api, metrics_dir)
    finally:
        assert api.stop() == 0


def assert_totals_on_every_scrape(api: ServiceProcess, metrics_dir: Path) -> None:
    """Send requests until both API processes have enqueued tasks, then every one of 10 scrapes
    (answered by either process) shows the totals."""
    sent = 0
    for _ in range(20):  # until both processes have served requests
        statuses = [send_one(api.url) for _ in range(10)]
        assert statuses == [200] * 10
        sent += len(statuses)
        if len(processes_that_enqueued(metrics_dir)) == 2:
            break
    assert len(processes_that_enqueued(metrics_dir)) == 2
    labels = {"task": "write_log", "backend": "inprocess"}
    wait_until(
        lambda: api.value("background_task_finished_total", **labels, outcome="success") == sent
    )
    route = {"method": "POST", "route": "/send-notification/{email}", "status_code": "200"}
    for _ in range(10):
        text = httpx.get(f"{api.url}/metrics", timeout=10).text
        assert sample(text, "background_task_enqueued_total", labels) == sent
        assert sample(text, "background_task_finished_total", labels, "success") == sent
        assert sample(text, "http_server_request_duration_seconds_count", route) == sent
        assert sample(text, "background_task_in_progress", labels) == 0
    assert len((api.data_dir / "log.txt").read_text().splitlines()) == sent


def sample(text: str, name: str, labels: dict[str, str], outcome: str | None = None) -> float:
    extra = {"outcome": outcome} if outcome else {}
    return sample_value(text, name, **labels, **extra)


def processes_that_enqueued(metrics_dir: Path) -> set[str]:
    """Pids whose counter file has enqueued a task (prometheus-client's own file reader)."""
    pids = set()
    for file in readable_files(metrics_dir, "counter_*.db"):
        for family in MultiProcessCollector.merge([file], accumulate=False):
            if family.name == "background_task_enqueued" and any(
                s.value > 0 for s in family.samples
            ):
                pids.add(Path(file).stem.split("_", 1)[1])
    return pids


def test_idempotency_keys_are_shared_by_the_processes(tmp_path: Path, broker_url: str) -> None:
    """uvicorn --workers 2: a key is honoured whichever process answers (Redis store): the same
    keyed request, each on a connection of its own, is enqueued once and answered alike."""
    api = ServiceProcess(tmp_path, {"NOTIFY_BROKER_URL": broker_url}, ("--workers", "2"))
    try:
        answers = [
            httpx.post(
                f"{api.url}/send-notification/a@example.com",
                headers={"Idempotency-Key": "order-42"},
                timeout=10,
            )
            for _ in range(12)
        ]
        assert {answer.status_code for answer in answers} == {200}
        assert len({answer.text for answer in answers}) == 1
        assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 11
        log = api.data_dir / "log.txt"
        wait_until(lambda: log.exists() and log.read_text().count("\n") == 1)
        assert api.value("background_task_enqueued_total", task="write_log") == 1
    finally:
        assert api.stop() == 0
