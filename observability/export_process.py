"""Span export off the serving process: OTLP encoding and HTTP in a helper process.

The OTLP exporter encodes spans in Python (about 50 µs a span here), on the batch processor's
thread, holding the serving process's GIL while the event loop waits for it. This exporter
hands each batch over as plain values (about a fifth of that) to a child process
(``python -m observability.export_process``), which rebuilds the spans, encodes and sends them
with the OTLP/HTTP exporter (configured by the same ``OTEL_EXPORTER_OTLP_*`` variables) and
answers with the batch's result. The batch processor's thread waits for that answer outside the
GIL, so accounting, back-pressure and timeouts stay those of an exporter called in place.

A child that dies fails the batch it had (counted as an export failure by the caller) and is
started again for the next one; a child whose parent is gone sees its input end and exits."""

import argparse
import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from observability import names
from observability.logs import LogFormat, configure_logging, get_logger

_HEADER = struct.Struct("!I")
_OK, _FAILED = b"1", b"0"
STOP_SECONDS = 5.0

# -- plain values ------------------------------------------------------------------------------
# A span travels as a tuple of str, int, float, bool, None, tuples and dicts of those: cheap to
# pickle, and nothing but data is unpickled on the other side.


def _plain(attributes: Attributes) -> dict[str, Any]:
    if isinstance(attributes, BoundedAttributes):
        return dict(attributes.copy())
    return dict(attributes or {})


def _context(context: SpanContext) -> tuple[Any, ...]:
    state = tuple(context.trace_state.items()) if context.trace_state else ()
    return (context.trace_id, context.span_id, int(context.trace_flags), state, context.is_remote)


def flatten(spans: Sequence[ReadableSpan]) -> tuple[list[Any], list[Any], list[Any]]:
    """(resources, scopes, spans) of a batch, resources and scopes listed once each."""
    resources: dict[int, int] = {}
    scopes: dict[int, int] = {}
    resource_list: list[Any] = []
    scope_list: list[Any] = []
    flat: list[Any] = []
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        r = resources.get(id(resource))
        if r is None:
            r = resources[id(resource)] = len(resource_list)
            resource_list.append((_plain(resource.attributes), resource.schema_url))
        s = scopes.get(id(scope))
        if s is None:
            s = scopes[id(scope)] = len(scope_list)
            scope_list.append(
                None if scope is None else (scope.name, scope.version, scope.schema_url)
            )
        context, parent, status = span.context, span.parent, span.status
        flat.append(
            (
                r,
                s,
                span.name,
                None if context is None else _context(context),
                None if parent is None else _context(parent),
                span.kind.value,
                span.start_time,
                span.end_time,
                status.status_code.value,
                status.description,
                _plain(span.attributes),
                span.dropped_attributes,
                [(e.name, e.timestamp, _plain(e.attributes)) for e in span.events],
                span.dropped_events,
                [(_context(link.context), _plain(link.attributes)) for link in span.links],
                span.dropped_links,
            )
        )
    return resource_list, scope_list, flat


def _span_context(values: tuple[Any, ...]) -> SpanContext:
    trace_id, span_id, flags, state, remote = values
    return SpanContext(trace_id, span_id, remote, TraceFlags(flags), TraceState(list(state)))


def _bounded(attributes: dict[str, Any], dropped: int) -> BoundedAttributes:
    bounded = BoundedAttributes(attributes=attributes, immutable=False, max_value_len=None)
    bounded.dropped = dropped
    return bounded


def _bounded_list(items: list[Any], dropped: int) -> BoundedList:  # type: ignore[type-arg]
    bounded: BoundedList = BoundedList(None)  # type: ignore[type-arg]
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded


def rebuild(batch: tuple[list[Any], list[Any], list[Any]]) -> list[ReadableSpan]:
    """The spans ``flatten`` made plain values of."""
    resource_values, scope_values, flat = batch
    resources = [Resource(attributes, schema_url) for attributes, schema_url in resource_values]
    scopes = [None if s is None else InstrumentationScope(*s) for s in scope_values]
    spans = []
    for (
        r,
        s,
        name,
        context,
        parent,
        kind,
        start,
        end,
        code,
        description,
        attributes,
        dropped_attributes,
        events,
        dropped_events,
        links,
        dropped_links,
    ) in flat:
        spans.append(
            ReadableSpan(
                name=name,
                context=None if context is None else _span_context(context),
                parent=None if parent is None else _span_context(parent),
                resource=resources[r],
                attributes=_bounded(attributes, dropped_attributes),
                events=_bounded_list(
                    [Event(event, attrs, time) for event, time, attrs in events],
                    dropped_events,
                ),
                links=_bounded_list(
                    [Link(_span_context(ctx), link_attributes) for ctx, link_attributes in links],
                    dropped_links,
                ),
                kind=SpanKind(kind),
                status=Status(StatusCode(code), description),
                start_time=start,
                end_time=end,
                instrumentation_scope=scopes[s],
            )
        )
    return spans


# -- the serving side --------------------------------------------------------------------------


class ProcessSpanExporter(SpanExporter):
    """Exports through a child process running the OTLP/HTTP exporter (see the module)."""

    def __init__(self, *, log_format: LogFormat = "json", log_level: str = "INFO") -> None:
        self._command = [
            sys.executable,
            "-m",
            __name__,
            "--log-format",
            log_format,
            "--log-level",
            log_level,
        ]
        self._lock = threading.Lock()  # one batch at a time through the child
        self._child: subprocess.Popen[bytes] | None = None
        self._replies: IO[bytes] | None = None
        self._closed = False
        self.log = get_logger("observability.export_process")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        payload = pickle.dumps(flatten(spans), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            child, replies = self._running()
            try:
                assert child.stdin is not None
                child.stdin.write(_HEADER.pack(len(payload)) + payload)
                child.stdin.flush()
                reply = replies.read(1)
            except (OSError, ValueError):  # the child is gone (or shut down meanwhile)
                reply = b""
            if not reply:
                self._lost(child)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if reply == _OK else SpanExportResult.FAILURE

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


# -- the child ---------------------------------------------------------------------------------


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(requests: IO[bytes], replies: IO[bytes], exporter: SpanExporter) -> None:
    """Export each batch read from ``requests``, answer each on ``replies``, until the end."""
    while (header := _read_exactly(requests, _HEADER.size)) is not None:
        payload = _read_exactly(requests, _HEADER.unpack(header)[0])
        if payload is None:
            break
        try:
            result = exporter.export(rebuild(pickle.loads(payload)))
        except Exception as exc:  # a bad batch fails alone
            get_logger(__name__).error(
                names.EVENT_EXPORT_BATCH_FAILED, error_type=type(exc).__name__, error=str(exc)
            )
            result = SpanExportResult.FAILURE
        replies.write(_OK if result == SpanExportResult.SUCCESS else _FAILED)
        replies.flush()
    exporter.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--log-format", choices=("json", "console"), default="json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    configure_logging(args.log_format, args.log_level)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with os.fdopen(args.reply_fd, "wb", buffering=0) as replies:
        serve(sys.stdin.buffer, replies, OTLPSpanExporter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
