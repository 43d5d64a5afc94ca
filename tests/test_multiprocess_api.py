"""The API under ``uvicorn --workers 2`` with the in-process backend: prometheus-client's
multiprocess mode makes every process serve the totals of all."""

from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import ServiceProcess, sample_value, wait_until


def send_one(url: str) -> int:
    """POST on a connection of its own (so the kernel may hand it to either API process)."""
    return httpx.post(f"{url}/send-notification/a@example.com", timeout=10).status_code


def test_multiprocess_api_metrics_are_totals_on_every_scrape(tmp_path: Path) -> None:
    """uvicorn --workers 2: every scrape of /metrics shows all N tasks and requests."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    api = ServiceProcess(
        tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, ("--workers", "2")
    )
    try:
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
    finally:
        assert api.stop() == 0


def sample(text: str, name: str, labels: dict[str, str], outcome: str | None = None) -> float:
    extra = {"outcome": outcome} if outcome else {}
    return sample_value(text, name, **labels, **extra)


def processes_that_enqueued(metrics_dir: Path) -> set[str]:
    """Pids whose counter file has enqueued a task (prometheus-client's own file reader)."""
    pids = set()
    for file in metrics_dir.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(file)], accumulate=False):
            if family.name == "background_task_enqueued" and any(
                s.value > 0 for s in family.samples
            ):
                pids.add(file.stem.split("_", 1)[1])
    return pids
