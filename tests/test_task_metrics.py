"""Task metrics of real runs in a real uvicorn process: every series from start-up, the
counters, histograms and timestamps a run moves, trace exemplars in OpenMetrics."""

import re
from typing import Any

from tests.support.metrics import sample_value
from tests.support.polling import wait_until

TASKS = ("write_log", "sms_task", "safe_write_log")


def test_known_task_series_exist_at_zero(start_service: Any) -> None:
    """Right after start-up every known task has its series, at zero."""
    text = start_service().metrics()
    for task in TASKS:
        for name in ("background_task_enqueued_total", "background_task_started_total"):
            assert f'{name}{{backend="inprocess",task="{task}"}} 0.0' in text
        for outcome in ("success", "failure", "timeout"):
            assert re.search(
                rf'background_task_finished_total\{{[^}}]*outcome="{outcome}"'
                rf'[^}}]*task="{task}"\}} 0\.0',
                text,
            )
    assert 'background_task_capacity{backend="inprocess"} 8.0' in text
    assert 'background_task_queue_depth{backend="inprocess",queue="default"} 0.0' in text


def test_success_moves_counters_histograms_and_timestamps(start_service: Any) -> None:
    """A successful run counts enqueued/started/finished, observes wait and duration."""
    service = start_service()
    for _ in range(3):
        service.client.post("/send-notification/a@example.com")
    labels = {"task": "write_log", "backend": "inprocess"}
    wait_until(
        lambda: service.value("background_task_finished_total", outcome="success", **labels) == 3
    )
    text = service.metrics()
    assert sample_value(text, "background_task_enqueued_total", **labels) == 3
    assert sample_value(text, "background_task_started_total", **labels) == 3
    assert sample_value(text, "background_task_queue_wait_seconds_count", **labels) == 3
    assert (
        sample_value(text, "background_task_duration_seconds_count", outcome="success", **labels)
        == 3
    )
    assert sample_value(text, "background_task_in_progress", **labels) == 0
    started = sample_value(text, "background_task_last_started_timestamp_seconds", **labels)
    finished = sample_value(
        text, "background_task_last_finished_timestamp_seconds", outcome="success", **labels
    )
    assert 0 < started <= finished


def test_openmetrics_serves_trace_exemplars(start_service: Any) -> None:
    """Asked for OpenMetrics, /metrics serves trace_id exemplars on the duration histograms."""
    service = start_service()
    service.client.post("/safe-notify")
    wait_until(
        lambda: (
            service.value(
                "background_task_finished_total",
                task="safe_write_log",
                backend="inprocess",
                outcome="success",
            )
            == 1
        )
    )
    text = service.metrics(openmetrics=True)
    assert re.search(
        r'background_task_duration_seconds_bucket\{[^}]*task="safe_write_log"'
        r'[^}]*\} 1\.0 # \{trace_id="[0-9a-f]{32}"\}',
        text,
    )
    assert re.search(
        r'http_server_request_duration_seconds_bucket\{[^}]*route="/safe-notify"'
        r'[^}]*\} 1\.0 # \{trace_id="[0-9a-f]{32}"\}',
        text,
    )
    assert "# {" not in service.metrics()  # plain text format has no exemplars
