"""E-mail over SMTP (the standard library's ``smtplib``): one connection kept open per thread
that sends (an in-process run slot, a Celery worker process), opened on first use and again
when the server has dropped it; STARTTLS, implicit TLS or plain, with AUTH when a username is
set. Each message is one observed delivery attempt."""

import os
import smtplib
import ssl
import threading
from email.message import EmailMessage
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
Security = Literal["starttls", "tls", "none"]


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

    def message(self, task_id: str, to: str, subject: str, text: str) -> EmailMessage:
        """The message of a task: its ``Message-ID`` is derived from the task id, so that a
        copy sent twice can be recognised as one."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{task_id}@{self._domain}>"
        message.set_content(text)
        return message

    def send(self, message: EmailMessage) -> None:
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

    def _send(self, message: EmailMessage) -> None:
        connection, reused = self._connection()
        try:
            connection.send_message(message)
        except smtplib.SMTPServerDisconnected:
            if not reused:
                raise
            self._drop()  # dropped while idle: once more on a new connection
            connection, _ = self._connection()
            connection.send_message(message)

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's connection (opened if there is none); whether it was open already."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection, True
        connection = self._connect()
        self._local.connection, self._local.pid = connection, os.getpid()
        with self._lock:
            self._open.append(connection)
        return connection, False

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


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
