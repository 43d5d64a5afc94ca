"""FIFO sinks: ``log.txt`` made a FIFO blocks a task run's open until a reader comes, so tests
decide when a run may go on, and read what it wrote."""

import os
import threading
import time
from pathlib import Path


def make_fifo(data_dir: Path) -> Path:
    """``data_dir/log.txt`` as a FIFO nobody reads yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fifo = data_dir / "log.txt"
    os.mkfifo(fifo)
    return fifo


class FifoReader(threading.Thread):
    """Holds the FIFO open for reading (so writers' opens stop blocking) and collects what is
    written, for ``seconds`` (None: until ``stop``)."""

    def __init__(self, fifo: Path, seconds: float | None = None) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.deadline = float("inf") if seconds is None else time.monotonic() + seconds
        self._lock = threading.Lock()
        self._data = bytearray()
        self.start()

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if not self._read():
                    time.sleep(0.01)
            while self._read():  # what is still in the pipe
                pass
        finally:
            os.close(self.fd)

    def _read(self) -> bool:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:  # a writer, no data yet
            return False
        with self._lock:
            self._data += chunk
        return bool(chunk)

    def read(self) -> bytes:
        """What was read so far."""
        with self._lock:
            return bytes(self._data)

    def stop(self) -> list[str]:
        """Stop reading (once the pipe is empty), close the FIFO and return the lines read."""
        self.deadline = 0
        self.join(10)
        assert not self.is_alive()
        return self.lines()

    def lines(self) -> list[str]:
        return self.read().decode().splitlines()
