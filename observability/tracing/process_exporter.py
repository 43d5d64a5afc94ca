"""Span export off the serving process: the exporter the batch processor calls hands each batch
over as plain values (``codec``) to a helper process (``export_helper``), which encodes and
sends it with the OTLP/HTTP exporter and answers with the batch's result. The batch
processor's thread waits for that answer outside the GIL, so accounting, back-pressure and
timeouts stay those of an exporter called in place; the serving process is spared the OTLP
encoding, done in Python while holding its GIL (bench/profile.md has the figures).

A batch crosses in chunks of ``CHUNK_SPANS`` spans, each flattened, pickled and written on its
own, with the GIL given up in between: flattening a whole batch of 512 at once held the GIL
for milliseconds, a stall the event loop waited out (issue 18); a chunk holds it for about a
quarter of a millisecond. The helper rebuilds each chunk as it comes and exports the batch at
its end marker.

A helper that dies fails the batch it had (counted as an export failure by the caller) and is
started again for the next one; a helper whose parent is gone sees its input end and exits."""

import contextlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observability import names
from observability.logs.configuration import LogFormat, get_logger
from observability.tracing import export_helper
from observability.tracing.codec import flatten

STOP_SECONDS = 5.0
CHUNK_SPANS = 32  # spans handed over at a time (~0.25 ms of the GIL), the GIL released between
# the pause after each chunk: long enough for a thread waiting for the GIL to wake up and take it
# (a zero sleep releases it, but this thread is back for it first, before the waiter is awake)
PAUSE_SECONDS = 0.0001


class ProcessSpanExporter(SpanExporter):
    """Exports through a helper process running the OTLP/HTTP exporter (see the module)."""

    def __init__(self, *, log_format: LogFormat = "json", log_level: str = "INFO") -> None:
        self._command = [
            sys.executable,
            "-m",
            export_helper.__name__,
            "--log-format",
            log_format,
            "--log-level",
            log_level,
        ]
        self._lock = threading.Lock()  # one batch at a time through the child
        self._child: subprocess.Popen[bytes] | None = None
        self._replies: IO[bytes] | None = None
        self._closed = False
        self.log = get_logger("observability.tracing.process_exporter")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            child, replies = self._running()
            try:
                assert child.stdin is not None
                self._hand_over(spans, child.stdin)
                reply = replies.read(1)
            except (OSError, ValueError):  # the child is gone (or shut down meanwhile)
                reply = b""
            except Exception as exc:  # a span that can't be handed over: the batch fails alone
                self.log.error(
                    names.EVENT_EXPORT_BATCH_FAILED, error_type=type(exc).__name__, error=str(exc)
                )
                self._stop_child(0.0)  # it holds part of the batch: the next starts afresh
                return SpanExportResult.FAILURE
            if not reply:
                self._lost(child)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if reply == export_helper.OK else SpanExportResult.FAILURE

    @staticmethod
    def _hand_over(spans: Sequence[ReadableSpan], pipe: IO[bytes]) -> None:
        """Write the batch to the child chunk by chunk, then its end marker. After each chunk
        the thread pauses briefly without the GIL: a waiting event loop gets it then, instead of
        after the interpreter's switch interval (5 ms) or the end of the batch."""
        header = export_helper.HEADER
        for start in range(0, len(spans), CHUNK_SPANS):
            chunk = pickle.dumps(
                flatten(spans[start : start + CHUNK_SPANS]), protocol=pickle.HIGHEST_PROTOCOL
            )
            pipe.write(header.pack(len(chunk), export_helper.CHUNK) + chunk)
            pipe.flush()
            time.sleep(PAUSE_SECONDS)
        pipe.write(header.pack(0, export_helper.END))
        pipe.flush()

    def _running(self) -> tuple["subprocess.Popen[bytes]", IO[bytes]]:
        """The child, started if there is none (under ``_lock``)."""
        if self._child is not None and self._child.poll() is not None:
            self._lost(self._child)  # it died between two batches
        if self._child is None or self._replies is None:
            read_end, write_end = os.pipe()
            try:
                self._child = subprocess.Popen(
                    [*self._command, "--reply-fd", str(write_end)],
                    stdin=subprocess.PIPE,
                    pass_fds=(write_end,),
                )
            finally:
                os.close(write_end)
            self._replies = os.fdopen(read_end, "rb", buffering=0)
        return self._child, self._replies

    def _lost(self, child: "subprocess.Popen[bytes]") -> None:
        """The child has ended unasked (under ``_lock``): reap it; the next batch starts a new
        one."""
        self._stop_child(0.0)
        if not self._closed:
            self.log.warning(names.EVENT_EXPORT_PROCESS_EXITED, returncode=child.returncode)

    def _stop_child(self, grace: float) -> None:
        child, replies = self._child, self._replies
        self._child = self._replies = None
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # the child finishes its batch, sees the end and exits
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if replies is not None:
            replies.close()

    def shutdown(self) -> None:
        """Stop the child: at once when a batch is still under way (the collector is down or
        slow, the caller gave up waiting), else after it has exited by itself."""
        self._closed = True
        if self._lock.acquire(timeout=0.1):
            try:
                self._stop_child(STOP_SECONDS)
            finally:
                self._lock.release()
        else:  # a batch holds the lock: end its child, its export then fails at once
            child = self._child
            if child is not None and child.poll() is None:
                child.kill()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is kept here: each batch is answered before export returns
