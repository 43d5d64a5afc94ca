"""The delivery part's baseline: a bare loop sending e-mails, ``python -m bench.smtp_bare``.

The same messages as the service's SMTP channel (``EmailMessage`` with From, To, Subject, Date,
Message-ID and the same text body), the same client library (``smtplib.SMTP``, plain) and the
same connection reuse: ``--threads`` threads (the service's ``NOTIFY_TASK_CONCURRENCY``) take
the next message from a shared counter, each on one connection of its own opened on first use
and kept open. Nothing else: no metrics, spans, logs, ledger or file line.

``--build modern`` (the default) builds each message with ``EmailMessage`` (the modern API) and
sends it with ``send_message``; ``--build compat32`` builds it as the service does for ASCII
headers (``SmtpChannel.message``: compat32 ``MIMEText``, several times cheaper) and sends it with
``Outgoing.send_on`` (``sendmail``), so the service's overhead can also be read against a loop
paying the same message-building cost.

``--warmup`` messages first (not timed; they open the connections), then ``--count`` timed
ones; one JSON line on stdout: the monotonic time the timed messages started, the process's CPU
seconds over them, and their per-message latencies (connect if any + send).
"""

from __future__ import annotations

import argparse
import itertools
import json
import smtplib
import sys
import threading
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Literal

Build = Literal["modern", "compat32"]

SENDER = "notifications@localhost"
RECIPIENT = "user@example.com"
SUBJECT = "Notification"  # the service's default subject
TEXT = f"message to {RECIPIENT}"  # what POST /send-notification/{email} sends


def message(task_id: str) -> EmailMessage:
    """The headers and body ``SmtpChannel.message`` gives a task of ``POST
    /send-notification/{email}``, built with the modern API (the channel takes compat32)."""
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = RECIPIENT
    m["Subject"] = SUBJECT
    m["Date"] = formatdate(usegmt=True)
    m["Message-ID"] = f"<{task_id}@{SENDER.rpartition('@')[2]}>"
    m.set_content(TEXT)
    return m


Prepared = Callable[[smtplib.SMTP], None]  # a built message: sends itself on a connection


def modern() -> Prepared:
    """A message built with ``EmailMessage``, to go with ``send_message``."""
    m = message(uuid.uuid4().hex)

    def send(connection: smtplib.SMTP) -> None:
        connection.send_message(m)

    return send


def compat32(port: int, timeout: float) -> Callable[[], Prepared]:
    """Messages built as the service's SMTP channel builds them (compat32 ``MIMEText`` for
    ASCII headers), each sent with ``Outgoing.send_on``."""
    from service.channels.smtp import SmtpChannel

    channel = SmtpChannel("127.0.0.1", port, security="none", sender=SENDER, timeout=timeout)

    def prepare() -> Prepared:
        return channel.message(uuid.uuid4().hex, RECIPIENT, SUBJECT, TEXT).send_on

    return prepare


class Senders:
    """``threads`` senders, each with its connection (by thread number) kept across phases."""

    def __init__(self, port: int, threads: int, timeout: float, build: Build = "modern") -> None:
        self.port, self.threads, self.timeout = port, threads, timeout
        self.connections: list[smtplib.SMTP | None] = [None] * threads
        self.prepare = modern if build == "modern" else compat32(port, timeout)

    def phase(self, count: int) -> list[float]:
        """Send ``count`` messages from every thread, pulling from one counter; the latencies."""
        numbers = itertools.count()
        latencies: list[float] = []

        def sender(slot: int) -> None:
            own: list[float] = []
            prepare = self.prepare
            while next(numbers) < count:
                send = prepare()  # built before the clock starts, as the service's histogram
                t0 = time.perf_counter()
                connection = self.connections[slot]
                if connection is None:
                    connection = smtplib.SMTP("127.0.0.1", self.port, timeout=self.timeout)
                    self.connections[slot] = connection
                send(connection)
                own.append(time.perf_counter() - t0)
            latencies.extend(own)

        workers = [threading.Thread(target=sender, args=(i,)) for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return latencies

    def close(self) -> None:
        for connection in self.connections:
            if connection is not None:
                connection.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--build", choices=("modern", "compat32"), default="modern")
    args = parser.parse_args()
    senders = Senders(args.port, args.threads, args.timeout, args.build)
    senders.phase(args.warmup)
    started, cpu0 = time.monotonic(), time.process_time()
    latencies = senders.phase(args.count)
    cpu = time.process_time() - cpu0
    ended = time.monotonic()
    senders.close()
    out = {"started": started, "ended": ended, "cpu_seconds": cpu, "latencies": latencies}
    print(json.dumps(out))
    return 0 if len(latencies) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
