"""The export helper program, ``python -m observability.tracing.export_helper``: reads batches
of plain-value spans (``codec``) on stdin, each as chunks (a header: length and kind, then a
pickle) and an end marker, rebuilds each chunk as it arrives, exports each batch with the
OTLP/HTTP exporter (configured by the ``OTEL_EXPORTER_OTLP_*`` variables) and answers each with
one byte on the reply descriptor, until its input ends."""

import argparse
import os
import pickle
import struct
import sys
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observability import names
from observability.logs.configuration import configure_logging, get_logger
from observability.tracing.codec import rebuild

HEADER = struct.Struct("!IB")  # the length of the pickle that follows, the kind of message
CHUNK, END = 0, 1  # kinds: some spans of the batch; the batch is complete (no pickle)
OK, FAILED = b"1", b"0"


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _failed(exc: Exception) -> SpanExportResult:
    get_logger(__name__).error(
        names.EVENT_EXPORT_BATCH_FAILED, error_type=type(exc).__name__, error=str(exc)
    )
    return SpanExportResult.FAILURE


def serve(requests: IO[bytes], replies: IO[bytes], exporter: SpanExporter) -> None:
    """Export each batch read from ``requests``, answer each on ``replies``, until the end."""
    batch: list[ReadableSpan] = []
    result = SpanExportResult.SUCCESS  # FAILURE once a chunk of the batch could not be read
    while (header := _read_exactly(requests, HEADER.size)) is not None:
        size, kind = HEADER.unpack(header)
        payload = _read_exactly(requests, size)
        if payload is None:
            break
        if kind == CHUNK:
            if result == SpanExportResult.SUCCESS:
                try:
                    batch += rebuild(pickle.loads(payload))
                except Exception as exc:  # a bad batch fails alone
                    result = _failed(exc)
            continue
        if result == SpanExportResult.SUCCESS:
            try:
                result = exporter.export(batch)
            except Exception as exc:
                result = _failed(exc)
        replies.write(OK if result == SpanExportResult.SUCCESS else FAILED)
        replies.flush()
        batch, result = [], SpanExportResult.SUCCESS
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
