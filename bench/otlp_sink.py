"""A cheap local OTLP/HTTP receiver for the benchmarks: ``python -m bench.otlp_sink``.

It accepts ``POST /v1/traces`` (any path, in fact), reads the body by its ``Content-Length``
and answers ``200`` with an empty body, which is the protobuf encoding of an empty
``ExportTraceServiceResponse`` (every export accepted). It counts requests and body bytes and,
with ``--bodies FILE``, appends each body (length-prefixed) to a file so that the spans can be
counted *after* the run (``count_spans``), off the measured path. Plain asyncio, no framework:
on a 2-core machine it must not steal CPU from the server under test.

On SIGTERM/SIGINT it writes its counters as JSON to ``--stats FILE`` (with its own CPU time)
and exits. ``--ready FILE`` receives the port it listens on once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
LENGTH_REQUIRED = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# body record in the --bodies file: 4-byte length, 1-byte encoding (0 none, 1 gzip, 2 deflate)
RECORD = struct.Struct("<IB")
ENCODINGS = {b"gzip": 1, b"deflate": 2}


@dataclass
class Counters:
    requests: int = 0
    body_bytes: int = 0
    rejected: int = 0
    first: float = 0.0
    last: float = 0.0


class _Connection(asyncio.Protocol):
    def __init__(self, counters: Counters, bodies: BinaryIO | None) -> None:
        self.counters = counters
        self.bodies = bodies
        self.buffer = bytearray()
        self.need: int | None = None  # body bytes still expected for the current request
        self.encoding = 0
        self.close_after = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                if not self._parse_head(head):
                    return
            assert self.need is not None
            if len(self.buffer) < self.need:
                return
            body = bytes(self.buffer[: self.need])
            del self.buffer[: self.need]
            self.need = None
            self._handle(body)

    def _parse_head(self, head: bytes) -> bool:
        length = None
        self.encoding = 0
        self.close_after = False
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            value = value.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"content-encoding":
                self.encoding = ENCODINGS.get(value, 0)
            elif key == b"connection" and value == b"close":
                self.close_after = True
        if length is None:  # chunked bodies are not expected from the OTLP exporter
            self.counters.rejected += 1
            assert self.transport is not None
            self.transport.write(LENGTH_REQUIRED)
            self.transport.close()
            self.transport = None
            return False
        self.need = length
        return True

    def _handle(self, body: bytes) -> None:
        counters = self.counters
        now = time.monotonic()
        if not counters.requests:
            counters.first = now
        counters.last = now
        counters.requests += 1
        counters.body_bytes += len(body)
        if self.bodies is not None:
            self.bodies.write(RECORD.pack(len(body), self.encoding))
            self.bodies.write(body)
        assert self.transport is not None
        self.transport.write(RESPONSE)
        if self.close_after:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, ready: Path | None, bodies: BinaryIO | None) -> Counters:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counters, bodies), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.replace(ready)
    await stop.wait()
    server.close()
    return counters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready", type=Path, help="write the bound port here when listening")
    parser.add_argument("--stats", type=Path, help="write the counters here on exit")
    parser.add_argument("--bodies", type=Path, help="append request bodies here")
    args = parser.parse_args()
    bodies = open(args.bodies, "ab") if args.bodies else None  # noqa: SIM115
    try:
        counters = asyncio.run(serve(args.host, args.port, args.ready, bodies))
    finally:
        if bodies is not None:
            bodies.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {
        "requests": counters.requests,
        "body_bytes": counters.body_bytes,
        "rejected": counters.rejected,
        "active_seconds": counters.last - counters.first,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_kb": usage.ru_maxrss,
    }
    text = json.dumps(stats)
    if args.stats:
        args.stats.write_text(text)
    else:
        print(text)
    return 0


# --------------------------------------------------------------------------- harness side


def count_spans(bodies: Path) -> int:
    """Spans in the bodies a sink stored (decoded after the run, off the measured path)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = 0
    with open(bodies, "rb") as f:
        while header := f.read(RECORD.size):
            length, encoding = RECORD.unpack(header)
            body = f.read(length)
            if encoding == 1:
                body = gzip.decompress(body)
            elif encoding == 2:
                body = zlib.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    spans += len(scope_spans.spans)
    return spans


class Sink:
    """A sink process of the harness's own (stopped by its pid only)."""

    def __init__(self, workdir: Path, keep_bodies: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready = workdir / "otlp-sink.port"
        self.stats_path = workdir / "otlp-sink.json"
        self.bodies = workdir / "otlp-sink.bodies" if keep_bodies else None
        cmd = [
            sys.executable, "-m", "bench.otlp_sink",
            "--ready", str(self.ready), "--stats", str(self.stats_path),
        ]  # fmt: skip
        if self.bodies is not None:
            cmd += ["--bodies", str(self.bodies)]
        self._stderr = open(workdir / "otlp-sink.err", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + 20
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"OTLP sink did not start (exit {self.proc.poll()})")
            time.sleep(0.02)
        self.port = int(self.ready.read_text())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def cpu_seconds(self) -> float:
        from bench.common import proc_cpu_seconds  # harness side only: the sink stays light

        return proc_cpu_seconds(self.proc.pid)

    def stop(self, count: bool = True) -> dict[str, Any]:
        """Stop the sink; its counters, and the number of spans if bodies were kept."""
        from bench.common import stop_process

        stop_process(self.proc, 20)
        self._stderr.close()
        stats: dict[str, Any] = {}
        if self.stats_path.exists():
            stats = json.loads(self.stats_path.read_text())
        if count and self.bodies is not None and self.bodies.exists():
            stats["spans"] = count_spans(self.bodies)
            self.bodies.unlink()
        return stats


if __name__ == "__main__":
    sys.exit(main())
