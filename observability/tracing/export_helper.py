"""The export helper program, ``python -m observability.tracing.export_helper``: reads batches
of plain-value spans (``codec``) on stdin, one length-prefixed pickle each, exports them with
the OTLP/HTTP exporter (configured by the ``OTEL_EXPORTER_OTLP_*`` variables) and answers each
with one byte on the reply descriptor, until its input ends."""

import argparse
import os
import pickle
import struct
import sys
from typing import IO

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observability import names
from observability.logs.configuration import configure_logging, get_logger
from observability.tracing.codec import rebuild

HEADER = struct.Struct("!I")  # the length of the pickle that follows
OK, FAILED = b"1", b"0"


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
    while (header := _read_exactly(requests, HEADER.size)) is not None:
        payload = _read_exactly(requests, HEADER.unpack(header)[0])
        if payload is None:
            break
        try:
            result = exporter.export(rebuild(pickle.loads(payload)))
        except Exception as exc:  # a bad batch fails alone
            get_logger(__name__).error(
                names.EVENT_EXPORT_BATCH_FAILED, error_type=type(exc).__name__, error=str(exc)
            )
            result = SpanExportResult.FAILURE
        replies.write(OK if result == SpanExportResult.SUCCESS else FAILED)
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
