"""E-mail over SMTP, in-process backend, against a real SMTP server process (aiosmtpd) that can
be scripted to answer 421/451/550, drop the connection, hold a message, speak STARTTLS or
implicit TLS and check AUTH. Real uvicorn process, spans to a real OTLP receiver."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.delivery import (
    FAST_RETRIES,
    ChannelProbe,
    accepted_task_id,
    assert_service_keeps_secret,
    error_lines,
    file_lines,
    final_run,
    runs_of,
)
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess
from tests.support.smtp_server import SmtpServer, self_signed_certificate

pytestmark = pytest.mark.e2e

SMTP = ChannelProbe("smtp", "write_log")
attempts, errors, finished = SMTP.attempts, SMTP.errors, SMTP.finished

SENDER = "notify@example.org"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def start(start_service: Any, smtp: SmtpServer, **env: str) -> ServiceProcess:
    service: ServiceProcess = start_service(
        **smtp.env(), NOTIFY_SMTP_FROM=SENDER, **FAST_RETRIES, **env
    )
    return service


def send(service: ServiceProcess, email: str) -> str:
    return accepted_task_id(service.client.post(f"/send-notification/{email}"))


def start_authenticated(
    start_service: Any,
    server: SmtpServer,
    security: str,
    password: str,
    ca_file: Path,
    receiver: OtlpReceiver,
) -> ServiceProcess:
    """The service sending through ``server`` over ``security`` (TLS verified against
    ``ca_file``), logging in as ``mailer`` with ``password``, spans to ``receiver``."""
    service: ServiceProcess = start_service(
        **server.env(security),
        NOTIFY_SMTP_FROM=SENDER,
        NOTIFY_SMTP_USERNAME="mailer",
        NOTIFY_SMTP_PASSWORD=password,
        NOTIFY_SMTP_CA_FILE=str(ca_file),
        **FAST_RETRIES,
        **otlp_env(receiver),
    )
    return service


def body(message: dict[str, Any]) -> str:
    text: str = message["body"]
    return text.replace("\r\n", "\n").removesuffix("\n")


def test_email_is_delivered_then_logged_with_its_span_metrics_and_log_line(
    start_service: Any, smtp: SmtpServer, otlp_receiver: OtlpReceiver
) -> None:
    """One e-mail: From/To/body/Message-ID as configured, log.txt only after the server said
    250, attempts{smtp,delivered}=1, a CLIENT span under the task's span, channel in the log."""
    service = start(start_service, smtp, **otlp_env(otlp_receiver))
    smtp.script(faults=[{"stage": "data", "reply": "hold"}])
    task_id = send(service, "alice@example.com")
    wait_until(lambda: smtp.stats()["held"] == 1, what="the message to be held at DATA")
    assert not (service.data_dir / "log.txt").exists()  # not before the server accepted it
    assert smtp.messages() == []
    smtp.release()
    wait_until(lambda: file_lines(service.data_dir / "log.txt"), what="the log.txt line")
    assert file_lines(service.data_dir / "log.txt") == ["message to alice@example.com"]
    [message] = smtp.messages()
    assert message["message_id"] == f"<{task_id}@example.org>"
    assert message["mail_from"] == SENDER and message["rcpt_tos"] == ["alice@example.com"]
    assert message["headers"]["From"] == SENDER
    assert message["headers"]["To"] == "alice@example.com"
    assert body(message) == "message to alice@example.com"
    run = final_run(service, task_id)
    assert run["event"] == "task.succeeded"
    assert (run["channel"], run["attempts"], run["provider_status"]) == ("smtp", 1, 250)
    assert run["delivery_result"] == "delivered"
    assert attempts(service, "delivered") == 1
    assert attempts(service, "transient_error") == attempts(service, "permanent_error") == 0
    task_span = wait_until(lambda: otlp_receiver.named("background_task write_log"))[0]
    [client] = wait_until(lambda: otlp_receiver.named("smtp send"))
    assert client.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert client.trace_id == task_span.trace_id
    assert client.parent_span_id == task_span.span_id
    attributes = span_attributes(client)
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == smtp.port
    assert task_span.start_time_unix_nano <= client.start_time_unix_nano
    assert client.end_time_unix_nano <= task_span.end_time_unix_nano
    assert error_lines(service.data_dir) == []


TRANSIENT_FAULTS = [
    ("connect", "421 4.3.2 Service not available"),
    ("mail", "421 4.3.2 Service shutting down"),
    ("rcpt", "451 4.3.0 Mailbox temporarily unavailable"),
    ("data", "451 4.3.0 Try again later"),
]


def test_busy_answers_are_retried_and_the_mail_delivered_once(
    start_service: Any, smtp: SmtpServer
) -> None:
    """421 on connect or MAIL, 451 on RCPT or DATA: ServerBusy, one retried run (outcome
    retry, an error.log line), then delivered exactly once with the log.txt line."""
    service = start(start_service, smtp)
    for n, (stage, reply) in enumerate(TRANSIENT_FAULTS, start=1):
        smtp.script(faults=[{"stage": stage, "reply": reply}])
        task_id = send(service, f"user{n}@example.com")
        run = final_run(service, task_id)
        assert run["event"] == "task.succeeded", run
        assert (run["attempts"], run["provider_status"]) == (2, 250)
        [retried] = [r for r in runs_of(service, task_id) if r["outcome"] == "retry"]
        assert retried["error_type"] == "ServerBusy"
        assert retried["provider_status"] == int(reply[:3])
        assert retried["delivery_result"] == "transient_error"
        copies = [m for m in smtp.messages() if m["message_id"] == f"<{task_id}@example.org>"]
        assert len(copies) == 1, (stage, copies)
        assert errors(service, "ServerBusy") == n
        assert finished(service, "retry") == n
        assert finished(service, "success") == n
        assert attempts(service, "delivered") == n
        assert attempts(service, "transient_error") == n
    assert finished(service, "failure") == 0
    assert len(smtp.messages()) == len(TRANSIENT_FAULTS)
    logged = file_lines(service.data_dir / "log.txt")
    assert sorted(logged) == [f"message to user{n}@example.com" for n in range(1, 5)]
    lines = error_lines(service.data_dir)
    assert len(lines) == len(TRANSIENT_FAULTS)
    assert all("ServerBusy" in line and "outcome=retry" in line for line in lines)


def test_refused_recipient_is_not_retried(start_service: Any, smtp: SmtpServer) -> None:
    """550 on RCPT: DeliveryRejected, one attempt, outcome failure, an error.log line, no
    log.txt line and nothing delivered; the next e-mail goes out normally."""
    service = start(start_service, smtp)
    smtp.script(faults=[{"stage": "rcpt", "reply": "550 5.1.1 No such user"}])
    task_id = send(service, "nobody@example.com")
    run = final_run(service, task_id)
    assert run["event"] == "task.failed" and run["outcome"] == "failure"
    assert run["error_type"] == "DeliveryRejected"
    assert (run["attempts"], run["provider_status"]) == (1, 550)
    assert run["delivery_result"] == "permanent_error"
    assert len(runs_of(service, task_id)) == 1
    after = send(service, "somebody@example.com")  # a task admitted after the failure
    assert final_run(service, after)["event"] == "task.succeeded"
    assert [e["stage"] for e in smtp.events("fault")] == ["rcpt"]  # never tried again
    assert [m["rcpt_tos"] for m in smtp.messages()] == [["somebody@example.com"]]
    assert attempts(service, "permanent_error") == 1
    assert attempts(service, "transient_error") == 0
    assert errors(service, "DeliveryRejected") == 1
    assert finished(service, "failure") == 1 and finished(service, "retry") == 0
    [line] = error_lines(service.data_dir)
    assert "DeliveryRejected" in line and f"id={task_id} outcome=failure" in line
    assert file_lines(service.data_dir / "log.txt") == ["message to somebody@example.com"]


def test_dropped_connections_are_reopened_and_the_mail_delivered(
    start_service: Any, smtp: SmtpServer
) -> None:
    """A kept connection the server drops (at MAIL, or at DATA) fails that attempt as transient
    (ConnectionFailed: nothing is resent inside an attempt, the server may have kept the
    message); the retry opens a new connection and the mail is delivered once."""
    service = start(start_service, smtp, NOTIFY_TASK_CONCURRENCY="1")
    first = send(service, "a@example.com")
    assert final_run(service, first)["attempts"] == 1
    assert smtp.stats()["connections"] == 1  # kept open for the next message
    smtp.script(faults=[{"stage": "mail", "reply": "drop"}])
    dropped = send(service, "b@example.com")
    run = final_run(service, dropped)
    assert run["event"] == "task.succeeded" and run["attempts"] == 2
    assert smtp.stats()["connections"] == 2
    smtp.script(faults=[{"stage": "data", "reply": "drop", "count": 2}])
    mid = send(service, "c@example.com")
    run = final_run(service, mid)
    assert run["event"] == "task.succeeded" and run["attempts"] == 3
    retried = [r for r in runs_of(service, mid) if r["outcome"] == "retry"]
    assert [r["error_type"] for r in retried] == ["ConnectionFailed", "ConnectionFailed"]
    assert errors(service, "ConnectionFailed") == 3
    assert smtp.stats()["connections"] == 4  # each drop closed one; a new one for each retry
    ids = [m["message_id"] for m in smtp.messages()]
    assert ids == [f"<{t}@example.org>" for t in (first, dropped, mid)]
    assert len(file_lines(service.data_dir / "log.txt")) == 3


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_auth_deliver_and_the_password_is_never_written(
    start_service: Any, tmp_path: Path, otlp_receiver: OtlpReceiver, security: str
) -> None:
    """STARTTLS (or implicit TLS) verified against the test CA, AUTH with the right password:
    delivered over TLS, authenticated; the password in no log, span, metric or sink."""
    password = "s3cr3t-Pa55word-Xq9"
    certificate = self_signed_certificate(tmp_path)
    server = SmtpServer(
        tmp_path,
        tls=certificate,
        implicit_tls=security == "tls",
        username="mailer",
        password=password,
    )
    try:
        service = start_authenticated(
            start_service, server, security, password, certificate[0], otlp_receiver
        )
        task_id = send(service, "alice@example.com")
        run = final_run(service, task_id)
        assert run["event"] == "task.succeeded", run
        [message] = server.messages()
        assert message["tls"] and message["auth"]
        assert message["message_id"] == f"<{task_id}@example.org>"
        assert [e["success"] for e in server.events("auth")] == [True]
        wait_until(lambda: otlp_receiver.named("smtp send"))
        assert_service_keeps_secret(service, password, otlp_receiver)
    finally:
        server.stop()


def test_wrong_password_is_permanent_and_never_written(
    start_service: Any, tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """AUTH refused (535): DeliveryRejected after one attempt, outcome failure; neither the
    wrong password nor the right one appears in logs, error.log, spans or metrics."""
    certificate = self_signed_certificate(tmp_path)
    server = SmtpServer(tmp_path, tls=certificate, username="mailer", password="right-0ne-Zz8")
    wrong = "wr0ng-Pa55word-Kk7"
    try:
        service = start_authenticated(
            start_service, server, "starttls", wrong, certificate[0], otlp_receiver
        )
        task_id = send(service, "alice@example.com")
        run = final_run(service, task_id)
        assert run["event"] == "task.failed" and run["outcome"] == "failure", run
        assert run["error_type"] == "DeliveryRejected"
        assert (run["attempts"], run["provider_status"]) == (1, 535)
        assert [e["success"] for e in server.events("auth")] == [False]
        assert server.messages() == []
        assert attempts(service, "permanent_error") == 1
        [line] = error_lines(service.data_dir)
        assert "DeliveryRejected" in line
        [client] = wait_until(lambda: otlp_receiver.named("smtp send"))
        assert span_attributes(client)["error.type"] == "DeliveryRejected"
        wait_until(lambda: otlp_receiver.named("background_task write_log"))
        for secret in (wrong, "right-0ne-Zz8"):
            assert_service_keeps_secret(service, secret, otlp_receiver)
    finally:
        server.stop()
