"""E-mail over SMTP (the standard library's ``smtplib``): one connection kept open per thread
that sends (an in-process run slot, a Celery worker process), opened on first use and again
when the server has dropped it (checked with ``NOOP`` after an idle spell); STARTTLS, implicit
TLS or plain, with AUTH when a username is set. Each message is one observed delivery
attempt."""

import os
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path
from typing import Literal

from opentelemetry.util.types import AttributeValue

from observability import delivery
from service.channels.errors import (
    ConnectionFailed,
    DeliveryRejected,
    DeliveryTimedOut,
    ServerBusy,
)

CHANNEL = "smtp"
# a connection idle longer than this is checked (NOOP) before a message goes on it: servers
# close idle connections, and a message must not be half-sent on one
IDLE_PROBE_SECONDS = 2.0
Security = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class Outgoing:
    """A message ready to send: envelope sender and recipient, and its bytes."""

    sender: str
    to: str
    data: bytes
    smtputf8: bool

    def send_on(self, connection: smtplib.SMTP) -> None:
        options = ("SMTPUTF8",) if self.smtputf8 else ()
        connection.sendmail(self.sender, [self.to], self.data, mail_options=options)


class SmtpChannel:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security,
        sender: str,
        timeout: float,
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.sender = sender
        self.timeout = timeout
        self._credentials = (username, password) if username else None
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[smtplib.SMTP] = []
        self._domain = sender.rpartition("@")[2] or "localhost"

    def message(self, task_id: str, to: str, subject: str, text: str) -> Outgoing:
        """The message of a task: its ``Message-ID`` is derived from the task id, so that a
        copy sent twice can be recognised as one. ASCII headers (the common case) take the
        email package's compat32 API, several times cheaper per message than ``EmailMessage``;
        anything else (an internationalised address or subject) the modern one, as SMTPUTF8."""
        headers = {
            "From": self.sender,
            "To": to,
            "Subject": subject,
            "Date": formatdate(usegmt=True),
            "Message-ID": f"<{task_id}@{self._domain}>",
        }
        if all(value.isascii() and value.isprintable() for value in headers.values()):
            plain = MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8")
            for name, value in headers.items():
                plain[name] = value
            return Outgoing(self.sender, to, plain.as_bytes(), smtputf8=False)
        # an internationalised address needs SMTPUTF8; a subject alone is RFC 2047-encoded
        smtputf8 = not (to.isascii() and self.sender.isascii())
        message = EmailMessage(policy=policy.SMTPUTF8 if smtputf8 else policy.SMTP)
        for name, value in headers.items():
            message[name] = value  # the modern API refuses line breaks in a header
        if smtputf8 or text.isascii():
            message.set_content(text)
        else:  # 7-bit safe: the server need not announce 8BITMIME
            message.set_content(text, cte="base64")
        return Outgoing(self.sender, to, message.as_bytes(), smtputf8=smtputf8)

    def send(self, message: "Outgoing") -> None:
        """Deliver ``message``, as one attempt; raises a ``service.channels.errors`` class."""
        attributes: dict[str, AttributeValue] = {
            "server.address": self.host,
            "server.port": self.port,
        }
        with delivery.attempt(CHANNEL, "smtp send", attributes) as attempt:
            try:
                self._send(message)
            except smtplib.SMTPRecipientsRefused as exc:
                self._drop()
                code = min(code for code, _ in exc.recipients.values())
                attempt.status = code
                raise _by_code(code, "the server refused the recipient") from None
            except smtplib.SMTPResponseException as exc:
                self._drop()
                attempt.status = exc.smtp_code
                raise _by_code(exc.smtp_code, "the server refused the message") from None
            except smtplib.SMTPNotSupportedError:
                self._drop()
                raise DeliveryRejected("the server does not support STARTTLS or AUTH") from None
            except TimeoutError:
                self._drop()
                raise DeliveryTimedOut(f"no answer within {self.timeout:g}s") from None
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise ConnectionFailed(f"SMTP server unreachable ({type(exc).__name__})") from None
            attempt.status = 250

    def close(self) -> None:
        """Quit every open connection (at shutdown)."""
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            _quit(connection)

    def _send(self, message: "Outgoing") -> None:
        """A connection dropped mid-message is not resent here (the server may have kept the
        message): the attempt fails as transient and the backend's retry decides."""
        message.send_on(self._connection())
        self._local.used = time.monotonic()

    def _connection(self) -> smtplib.SMTP:
        """This thread's connection, opened if there is none, or again if the server dropped it
        while it was idle (a ``NOOP`` tells, before anything of the message is sent)."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            if time.monotonic() - self._local.used < IDLE_PROBE_SECONDS or _answers(connection):
                return connection
            self._drop()
        connection = self._connect()
        self._local.connection, self._local.pid = connection, os.getpid()
        self._local.used = time.monotonic()
        with self._lock:
            self._open.append(connection)
        return connection

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._tls
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                connection.starttls(context=self._tls)
            if self._credentials is not None:
                connection.login(*self._credentials)
        except BaseException:
            _quit(connection)
            raise
        return connection

    def _drop(self) -> None:
        """Forget this thread's connection (after an error its state is unknown)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._open:
                    self._open.remove(connection)
            _quit(connection)


def _by_code(code: int, what: str) -> Exception:
    if 400 <= code < 500:
        return ServerBusy(f"{what} for now (SMTP {code})")
    return DeliveryRejected(f"{what} (SMTP {code})")


def _answers(connection: smtplib.SMTP) -> bool:
    """Whether an idle connection is still open at the server's end."""
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
