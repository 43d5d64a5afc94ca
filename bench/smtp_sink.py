"""A local SMTP server for the delivery part that accepts and counts: ``python -m bench.smtp_sink``.

aiosmtpd (a dev dependency) on uvloop, one process of its own: every message is accepted
(``250``) and thrown away; the sink keeps only the ``time.monotonic()`` of each ``DATA`` it
accepted (the system-wide monotonic clock, comparable with the harness's). A control port
answers one-line commands from the harness, one JSON line each:

* ``WAIT n timeout``: once ``n`` messages arrived (or after ``timeout`` s), the count and the
  arrival time of message ``n`` (null if it did not arrive);
* ``RESET``: forget the messages so far (the next round counts from 0);
* ``STATS``: the count and the sink's own CPU seconds.

``--port``/``--control-port`` (default: free ones); ``--ready FILE`` receives ``SMTP_PORT
CONTROL_PORT`` once both listen; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOSTNAME = "bench-smtp-sink"


class Counter:
    """aiosmtpd's handler: the arrival time of every accepted message, and one waiter."""

    def __init__(self) -> None:
        self.times = array("d")
        self.wake_at = 0  # count at which ``event`` is set (0: nobody waits)
        self.event = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.times.append(time.monotonic())
        if self.wake_at and len(self.times) >= self.wake_at:
            self.event.set()
        return "250 OK"

    async def wait(self, n: int, timeout: float) -> dict[str, Any]:
        if len(self.times) < n:
            self.event.clear()
            self.wake_at = n
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)
            self.wake_at = 0
        arrived = len(self.times) >= n > 0
        return {"count": len(self.times), "time": self.times[n - 1] if arrived else None}


async def control(counter: Counter, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """One harness connection: a JSON line per command line, until it closes."""
    while line := await reader.readline():
        cmd, *args = line.decode().split()
        answer: dict[str, Any] = {"count": len(counter.times)}
        if cmd == "WAIT":
            answer = await counter.wait(int(args[0]), float(args[1]))
        elif cmd == "RESET":
            counter.times = array("d")
            answer = {"count": 0}
        elif cmd == "STATS":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            answer["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        w.write(json.dumps(answer).encode() + b"\n")
        await w.drain()
    w.close()


async def serve(host: str, port: int, control_port: int, ready: Path | None) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    counter = Counter()
    smtp = await loop.create_server(
        lambda: SMTP(counter, hostname=HOSTNAME, ident="bench", loop=loop), host, port
    )
    ctl = await asyncio.start_server(lambda r, w: control(counter, r, w), host, control_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ports = f"{smtp.sockets[0].getsockname()[1]} {ctl.sockets[0].getsockname()[1]}"
    if ready is not None:
        ready.with_suffix(".tmp").write_text(ports)
        ready.with_suffix(".tmp").replace(ready)
    await stop.wait()
    smtp.close()
    ctl.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="SMTP port (0: a free one)")
    parser.add_argument("--control-port", type=int, default=0, help="(0: a free one)")
    parser.add_argument("--ready", type=Path, help="write 'SMTP_PORT CONTROL_PORT' here")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # aiosmtpd logs every command at DEBUG/INFO
    try:
        import uvloop
    except ImportError:  # plain asyncio: slower, same answers
        asyncio.run(serve(args.host, args.port, args.control_port, args.ready))
    else:
        uvloop.run(serve(args.host, args.port, args.control_port, args.ready))
    return 0


# --------------------------------------------------------------------------- harness side


class SmtpSink:
    """The sink process of the harness's own (stopped by its pid only), and its control line."""

    def __init__(self, workdir: Path) -> None:
        import socket

        workdir.mkdir(parents=True, exist_ok=True)
        ready = workdir / "smtp-sink.ports"
        self._stderr = open(workdir / "smtp-sink.err", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "bench.smtp_sink", "--ready", str(ready)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"SMTP sink did not start: {self._err()}")
            time.sleep(0.02)
        self.port, control_port = (int(x) for x in ready.read_text().split())
        self._control = socket.create_connection(("127.0.0.1", control_port), timeout=None)
        self._lines = self._control.makefile("rb")

    def _err(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text()[-2000:]

    def _ask(self, line: str) -> dict[str, Any]:
        self._control.sendall(line.encode() + b"\n")
        answer = self._lines.readline()
        if not answer:
            raise RuntimeError(f"SMTP sink gone: {self._err()}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def wait_for(self, n: int, timeout: float) -> float | None:
        """Block until ``n`` messages arrived; the monotonic time message ``n`` arrived, or None
        after ``timeout`` seconds."""
        time_n: float | None = self._ask(f"WAIT {n} {timeout}")["time"]
        return time_n

    def count(self) -> int:
        return int(self._ask("STATS")["count"])

    def cpu_seconds(self) -> float:
        return float(self._ask("STATS")["cpu_seconds"])

    def reset(self) -> None:
        self._ask("RESET")

    def stop(self) -> None:
        self._lines.close()
        self._control.close()
        from bench.common import stop_process  # harness side only: the sink stays light

        stop_process(self.proc, 20)
        self._stderr.close()


if __name__ == "__main__":
    sys.exit(main())
