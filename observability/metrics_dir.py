"""The directory of prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

prometheus-client chooses between in-memory values and per-process mmap files once, when it is
first imported, by looking at that environment variable: so a process that must run in
multiprocess mode sets it before anything imports ``prometheus_client``. This module imports
only the standard library for that reason."""

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def configured() -> Path | None:
    """The multiprocess directory of this process, or None (single-process mode)."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def claim(prefix: str) -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at a directory private to this process and the
    children it forks (``{tmp}/{prefix}-{pid}``), replacing any inherited value. The directory
    is created (empty) by ``reset``; call this before ``prometheus_client`` is imported."""
    path = Path(tempfile.gettempdir()) / f"{prefix}-{os.getpid()}"
    os.environ[ENV] = str(path)
    return path


def reset(path: Path) -> None:
    """Make ``path`` an empty directory (files of an earlier run would count in the totals)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
