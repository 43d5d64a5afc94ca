"""The lock of a multiprocess metrics directory's compaction (``compaction.py``): a ``flock``
on ``.compaction.lock``, shared by the readers (a scrape), exclusive for a compaction.

A ``flock`` belongs to the open file, which a forked child shares: a Celery prefork pool forking
a replacement while the worker's metrics thread holds the lock would keep it held for the
child's whole life (its copy of the descriptor is never closed), and every later scrape would
wait for it. So a child closes, right after the fork, the lock descriptors open in its parent
(``os.register_at_fork``); the lock is then the parent's alone, released when it closes its own.
"""

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = ".compaction.lock"

_guard = threading.Lock()  # held around opening and closing, and across a fork
_open: set[int] = set()  # the lock descriptors open in this process


@contextmanager
def locked(path: Path, shared: bool) -> Iterator[None]:
    """Hold the directory's compaction lock: shared (to read) or exclusive (to compact)."""
    with _guard:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        _open.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        with _guard:
            _open.discard(fd)
            os.close(fd)  # releases the lock (no forked child holds a copy)


def _after_fork_in_child() -> None:
    for fd in _open:
        with contextlib.suppress(OSError):
            os.close(fd)
    _open.clear()
    _guard.release()


os.register_at_fork(
    before=_guard.acquire, after_in_parent=_guard.release, after_in_child=_after_fork_in_child
)
