"""SMS through an HTTP provider, in-process backend, against a real provider process (stdlib
http.server) scripted to answer 503, 429 with Retry-After, 400, too slowly, or not at all
(a closed port); it deduplicates by Idempotency-Key as a provider honouring it would."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.delivery import (
    FAST_RETRIES,
    ChannelProbe,
    accepted_task_id,
    assert_secret_nowhere,
    assert_service_keeps_secret,
    error_lines,
    file_lines,
    final_run,
    runs_of,
)
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, free_port
from tests.support.sms_provider import SmsProvider

pytestmark = pytest.mark.e2e

HTTP = ChannelProbe("http", "sms_task")
attempts, errors, finished = HTTP.attempts, HTTP.errors, HTTP.finished

TOKEN = "tok-9f8e7d6c5b4a-SECRET"
PHONE = "+8613812345678"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[SmsProvider]:
    server = SmsProvider(tmp_path)
    yield server
    server.stop()


def start(start_service: Any, provider: SmsProvider, **env: str) -> ServiceProcess:
    service: ServiceProcess = start_service(**provider.env(TOKEN), **(FAST_RETRIES | env))
    return service


def send_sms(service: ServiceProcess, msg: str = "hello") -> str:
    return accepted_task_id(service.client.post("/send-sms", params={"phone": PHONE, "msg": msg}))


def client_spans(receiver: OtlpReceiver) -> list[Span]:
    """The provider calls' CLIENT spans (named ``POST``, unlike the server's ``POST /...``)."""
    return [span for span in receiver.named("POST") if span.name == "POST"]


def assert_every_request_identified(provider: SmsProvider, task_id: str) -> None:
    for request in provider.requests():
        assert request["authorization"] == f"Bearer {TOKEN}"
        assert request["idempotency_key"] == task_id
        assert request["body"] == {"to": PHONE, "text": "hello"}


def test_sms_is_delivered_with_token_key_span_and_log_line(
    start_service: Any, provider: SmsProvider, otlp_receiver: OtlpReceiver
) -> None:
    """POST {"to","text"} with Bearer token and Idempotency-Key = task id, then the
    sms_log.txt line; a CLIENT span `POST` under the task's span; the token nowhere."""
    service = start(start_service, provider, **otlp_env(otlp_receiver))
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.succeeded"
    assert (run["channel"], run["attempts"], run["provider_status"]) == ("http", 1, 200)
    assert run["delivery_result"] == "delivered"
    [request] = provider.requests()
    assert request["content_type"] == "application/json"
    assert_every_request_identified(provider, task_id)
    assert file_lines(service.data_dir / "sms_log.txt") == [f"{PHONE}:hello"]
    assert attempts(service, "delivered") == 1
    task_span = wait_until(lambda: otlp_receiver.named("background_task sms_task"))[0]
    [client] = wait_until(lambda: client_spans(otlp_receiver))
    assert client.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert client.parent_span_id == task_span.span_id
    attributes = span_attributes(client)
    assert attributes["http.request.method"] == "POST"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == provider.port
    assert attributes["url.full"] == provider.url
    assert attributes["http.response.status_code"] == 200
    assert_service_keeps_secret(service, TOKEN, otlp_receiver)


def test_503_twice_then_200_is_retried_with_the_same_key(
    start_service: Any, provider: SmsProvider, otlp_receiver: OtlpReceiver
) -> None:
    """503, 503, 200: two retried runs (ServerBusy), delivered on the third attempt, every
    attempt with the same key and token; the token in no log, error.log line or span."""
    service = start(start_service, provider, **otlp_env(otlp_receiver))
    provider.script(rules=[{"status": 503, "count": 2}])
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.succeeded"
    assert (run["attempts"], run["provider_status"]) == (3, 200)
    retried = [r for r in runs_of(service, task_id) if r["outcome"] == "retry"]
    assert [(r["error_type"], r["provider_status"]) for r in retried] == [("ServerBusy", 503)] * 2
    assert [r["status"] for r in provider.requests()] == [503, 503, 200]
    assert_every_request_identified(provider, task_id)
    assert provider.delivered_keys() == {task_id}
    assert errors(service, "ServerBusy") == 2
    assert attempts(service, "transient_error") == 2 and attempts(service, "delivered") == 1
    assert finished(service, "retry") == 2 and finished(service, "success") == 1
    assert file_lines(service.data_dir / "sms_log.txt") == [f"{PHONE}:hello"]
    lines = error_lines(service.data_dir)
    assert len(lines) == 2 and all("outcome=retry" in line for line in lines)
    wait_until(lambda: len(client_spans(otlp_receiver)) == 3)
    assert_service_keeps_secret(service, TOKEN, otlp_receiver)


def test_429_retry_after_is_honoured(start_service: Any, provider: SmsProvider) -> None:
    """429 with Retry-After: 1 (backoff 0.05 s): the retry comes at least 1 s later."""
    service = start(start_service, provider)
    provider.script(rules=[{"status": 429, "headers": {"Retry-After": "1"}}])
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.succeeded" and run["attempts"] == 2
    first, second = provider.requests()
    assert (first["status"], second["status"]) == (429, 200)
    assert second["mono"] - first["mono"] >= 1.0  # a lower bound only
    assert errors(service, "ServerBusy") == 1
    assert_every_request_identified(provider, task_id)


def test_400_is_permanent_and_not_retried(start_service: Any, provider: SmsProvider) -> None:
    """400: DeliveryRejected, one attempt, outcome failure, one error.log line, no sms_log.txt
    line; the token not in error.log."""
    service = start(start_service, provider)
    provider.script(rules=[{"status": 400}])
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.failed" and run["outcome"] == "failure"
    assert run["error_type"] == "DeliveryRejected"
    assert (run["attempts"], run["provider_status"]) == (1, 400)
    after = send_sms(service)  # admitted after the failure: by then no retry is pending
    assert final_run(service, after)["event"] == "task.succeeded"
    keys = [r["idempotency_key"] for r in provider.requests()]
    assert keys == [task_id, after]
    assert len(runs_of(service, task_id)) == 1
    assert attempts(service, "permanent_error") == 1
    assert errors(service, "DeliveryRejected") == 1
    assert finished(service, "failure") == 1 and finished(service, "retry") == 0
    [line] = error_lines(service.data_dir)
    assert "DeliveryRejected" in line and f"id={task_id} outcome=failure" in line
    assert file_lines(service.data_dir / "sms_log.txt") == [f"{PHONE}:hello"]
    assert_secret_nowhere(TOKEN, outputs=[service.raw_output()], data_dir=service.data_dir)


def test_reply_slower_than_the_timeout_is_retried_and_deduplicated(
    start_service: Any, provider: SmsProvider
) -> None:
    """The provider accepts but answers after 2 s, timeout 0.5 s: DeliveryTimedOut, retried
    with the same key, which the provider answers from its first delivery: one SMS."""
    service = start(start_service, provider, NOTIFY_DELIVERY_TIMEOUT_SECONDS="0.5")
    provider.script(rules=[{"status": 200, "delay": 2}])
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.succeeded" and run["attempts"] == 2
    [retried] = [r for r in runs_of(service, task_id) if r["outcome"] == "retry"]
    assert retried["error_type"] == "DeliveryTimedOut"
    assert retried["provider_status"] is None
    assert 0.5 <= retried["duration_seconds"] < 2
    requests = provider.requests()
    assert [r["replayed"] for r in requests] == [False, True]
    assert provider.delivered_keys() == {task_id}  # two requests, one SMS
    assert_every_request_identified(provider, task_id)
    assert errors(service, "DeliveryTimedOut") == 1
    assert file_lines(service.data_dir / "sms_log.txt") == [f"{PHONE}:hello"]


def test_closed_port_is_retried_then_fails(start_service: Any, tmp_path: Path) -> None:
    """Nothing listens: ConnectionFailed on each of 1 + NOTIFY_TASK_MAX_RETRIES attempts, the
    retried runs end `retry`, the last `failure`; an error.log line per run; no sms_log.txt."""
    url = f"http://127.0.0.1:{free_port()}/sms"
    service = start_service(
        NOTIFY_SMS_CHANNEL="http",
        NOTIFY_SMS_HTTP_URL=url,
        NOTIFY_SMS_HTTP_TOKEN=TOKEN,
        **(FAST_RETRIES | {"NOTIFY_TASK_MAX_RETRIES": "2"}),
    )
    task_id = send_sms(service)
    run = final_run(service, task_id)
    assert run["event"] == "task.failed" and run["outcome"] == "failure"
    assert run["error_type"] == "ConnectionFailed" and run["attempts"] == 3
    runs = runs_of(service, task_id)
    assert [r["outcome"] for r in runs] == ["retry", "retry", "failure"]
    assert errors(service, "ConnectionFailed") == 3
    assert attempts(service, "transient_error") == 3  # the last was retryable, not retried
    assert finished(service, "retry") == 2 and finished(service, "failure") == 1
    lines = error_lines(service.data_dir)
    assert [line.rsplit("outcome=", 1)[1].rstrip(")") for line in lines] == [
        "retry",
        "retry",
        "failure",
    ]
    assert not (service.data_dir / "sms_log.txt").exists()
    assert_secret_nowhere(TOKEN, outputs=[service.raw_output()], data_dir=service.data_dir)
