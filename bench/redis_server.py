"""A redis-server of the benchmark's own: on a free port, nothing on disk, stopped by its pid.

The Celery part publishes to it and its workers consume from it; the machine's Redis is never
touched, so a run neither needs nor disturbs one.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bench.common import free_port, stop_process


class Redis:
    """redis-server of our own on a free port (no persistence), stopped by its pid."""

    def __init__(self, workdir: Path) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server not found (Debian: apt-get install redis-server)")
        import redis

        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(workdir / "redis.log", "wb")  # noqa: SIM115
        cmd = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(workdir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client.ping():
                    break
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self._log.close()
