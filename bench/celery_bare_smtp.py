"""The delivery part's bare Celery worker: ``celery -A bench.celery_bare_smtp worker``.

The bare Celery app of ``bench/celery_bare.py`` (its ``BENCH_CELERY_CONF``: the harness passes
the project's Celery settings) with one more task, ``bench.send_mail``: the bare loop's message
(``bench.smtp_bare.message``: same headers and body, the modern ``EmailMessage``) sent with
``smtplib`` to ``BENCH_SMTP_PORT`` on one connection per worker process (thread-local, opened on
first use, kept; dropped after a failure, so the next task reconnects). Nothing observed.

Its only addition: each process appends ``<monotonic end> <seconds>`` per message (connect if
any + ``send_message``, the bare loop's timing) to ``latencies-<pid>.txt`` in
``NOTIFY_DATA_DIR`` (one small unbuffered write, a few µs), for the harness's p99.
"""

import os
import smtplib
import threading
import time
from typing import IO, Any

from bench.celery_bare import app
from bench.smtp_bare import message

__all__ = ["app", "send_mail"]

PORT = int(os.environ.get("BENCH_SMTP_PORT", "25"))
DATA = os.environ.get("NOTIFY_DATA_DIR", ".")
_local = threading.local()


def _connection() -> smtplib.SMTP:
    connection: smtplib.SMTP | None = getattr(_local, "connection", None)
    if connection is None or _local.pid != os.getpid():
        connection = smtplib.SMTP("127.0.0.1", PORT, timeout=10)
        _local.connection, _local.pid = connection, os.getpid()
    return connection


def _timings() -> IO[str]:
    out: IO[str] | None = getattr(_local, "timings", None)
    if out is None or _local.timings_pid != os.getpid():
        path = os.path.join(DATA, f"latencies-{os.getpid()}.txt")
        out = open(path, "a", buffering=1)  # noqa: SIM115  (kept open for the process)
        _local.timings, _local.timings_pid = out, os.getpid()
    return out


@app.task(name="bench.send_mail", bind=True)  # type: ignore[untyped-decorator]
def send_mail(self: Any) -> None:
    m = message(self.request.id)
    t0 = time.perf_counter()
    try:
        _connection().send_message(m)
    except (smtplib.SMTPException, OSError):
        connection, _local.connection = getattr(_local, "connection", None), None
        if connection is not None:
            connection.close()
        raise
    elapsed = time.perf_counter() - t0
    _timings().write(f"{time.monotonic():.6f} {elapsed:.6f}\n")
