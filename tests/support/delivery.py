"""What the delivery tests share: the servers they send to, reading a run's terminal log line,
the retries' accounting, and checking that a secret appears nowhere the service writes."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from tests.support.otlp import OtlpReceiver
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess
from tests.support.sms_provider import SmsProvider
from tests.support.smtp_server import SmtpServer

TERMINAL_EVENTS = ("task.succeeded", "task.failed", "task.timed_out")


class Logged(Protocol):
    def logs(self) -> list[dict[str, Any]]: ...
    def metrics(self, openmetrics: bool = False) -> str: ...


def runs_of(process: Logged, task_id: str) -> list[dict[str, Any]]:
    """The terminal log lines of every run of ``task_id``, in order."""
    return [
        line
        for line in process.logs()
        if line.get("event") in TERMINAL_EVENTS and line.get("task_id") == task_id
    ]


def final_run(process: Logged, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """The terminal log line of the last run of ``task_id`` (not ``retry``), once written."""

    def last() -> dict[str, Any] | None:
        ended = [r for r in runs_of(process, task_id) if r.get("outcome") != "retry"]
        return ended[-1] if ended else None

    return wait_until(last, timeout, what=f"task {task_id} to end")


def error_lines(data_dir: Path) -> list[str]:
    path = data_dir / "error.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def file_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def assert_secret_nowhere(
    secret: str,
    *,
    outputs: list[str],
    data_dir: Path,
    receiver: OtlpReceiver | None = None,
    metrics: list[str] = (),  # type: ignore[assignment]
) -> None:
    """``secret`` is in no process output (stdout/stderr), no file sink, no span, no metric."""
    assert secret
    for n, output in enumerate(outputs):
        assert secret not in output, f"the secret is in process output {n}"
    for sink in ("log.txt", "sms_log.txt", "error.log"):
        assert secret not in "\n".join(file_lines(data_dir / sink)), f"the secret is in {sink}"
    if receiver is not None:
        with receiver.lock:
            dumped = "\n".join(str(span) for _, span in receiver.spans)
        assert secret not in dumped, "the secret is in a span"
    for text in metrics:
        assert secret not in text, "the secret is in /metrics"


def assert_service_keeps_secret(
    service: ServiceProcess, secret: str, receiver: OtlpReceiver
) -> None:
    """``secret`` is nowhere ``service`` wrote: its output, its file sinks, the spans
    ``receiver`` got, its /metrics."""
    assert_secret_nowhere(
        secret,
        outputs=[service.raw_output()],
        data_dir=service.data_dir,
        receiver=receiver,
        metrics=[service.metrics()],
    )


def accepted_task_id(response: httpx.Response) -> str:
    """The task id of a send request answered 200 (asserted)."""
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task_ids"][0]
    return task_id


@contextmanager
def channel_servers(tmp_path: Path) -> Iterator[tuple[SmtpServer, SmsProvider]]:
    """An SMTP server and an SMS provider under ``tmp_path``, stopped on leaving."""
    smtp, provider = SmtpServer(tmp_path), SmsProvider(tmp_path)
    try:
        yield smtp, provider
    finally:
        smtp.stop()
        provider.stop()


FAST_RETRIES = {
    "NOTIFY_TASK_MAX_RETRIES": "3",
    "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "0.05",
    "NOTIFY_DELIVERY_TIMEOUT_SECONDS": "5",
}


@dataclass(frozen=True)
class ChannelProbe:
    """The metrics of one channel and the task that sends through it, read from a service."""

    channel: str
    task: str

    def attempts(self, service: ServiceProcess, result: str) -> float:
        return service.value(
            "notification_delivery_attempts_total", channel=self.channel, result=result
        )

    def errors(self, service: ServiceProcess, error: str) -> float:
        return service.value(
            "notification_delivery_errors_total", channel=self.channel, error=error
        )

    def finished(self, service: ServiceProcess, outcome: str) -> float:
        return service.value(
            "background_task_finished_total", task=self.task, backend="inprocess", outcome=outcome
        )
