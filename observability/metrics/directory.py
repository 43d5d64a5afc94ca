"""The directory of prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

prometheus-client chooses between in-memory values and per-process mmap files once, when it is
first imported, by looking at that environment variable: so a process that must run in
multiprocess mode sets it before anything imports ``prometheus_client``. This module imports
only the standard library for that reason."""

import multiprocessing
import os
import shutil
import sys
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
    is created (empty) by ``reset``; call this before ``prometheus_client`` is imported, or at
    least before any metric is created (see ``_choose_mode_again``)."""
    path = Path(tempfile.gettempdir()) / f"{prefix}-{os.getpid()}"
    os.environ[ENV] = str(path)
    _choose_mode_again()
    return path


def _choose_mode_again() -> None:
    """If ``prometheus_client`` is imported already, have it choose its mode again, now that the
    variable is set: ``celery``'s command line imports its plugins before the app (Flower's
    imports ``prometheus_client``). Metrics are made with the class chosen when they are created:
    any created before this call keep their values in memory, outside the files."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def claim_for_siblings(prefix: str) -> Path | None:
    """In a process that ``multiprocessing`` started (``uvicorn --workers N`` and ``--reload``
    spawn their servers so) with no ``PROMETHEUS_MULTIPROC_DIR`` of its own: point it at the
    directory of its parent's lifetime, ``{tmp}/{prefix}-{parent pid}-{parent start time}``, which
    every sibling, including one started later to replace a dead one, finds and none empties
    (no earlier process can have used that name). Directories of supervisors that are gone are
    removed. Returns the directory in use, or None (single-process mode). Call this before
    ``prometheus_client`` is imported."""
    if os.environ.get(ENV):
        return configured()
    if "prometheus_client" in sys.modules:
        return None  # too late: it runs in single-process mode now
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    root = Path(tempfile.gettempdir())
    path = root / f"{prefix}-{parent.pid}-{_start_time(parent.pid)}"
    for other in root.glob(f"{prefix}-*-*"):
        if other != path and not _owner_alive(other.name.removeprefix(f"{prefix}-")):
            shutil.rmtree(other, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    return path


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/{pid}/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"  # no procfs: trust kill(0)


def _start_time(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (``/proc``), or "0" if unknown:
    with the pid, it names one process's lifetime."""
    fields = _stat_fields(pid)
    return "0" if fields is None else fields[19]


def _owner_alive(key: str) -> bool:
    """Whether ``{pid}-{start time}`` names a process that still runs."""
    pid, _, started = key.partition("-")
    if not pid.isdigit():
        return True  # not one of ours: leave it
    return alive(int(pid)) and _start_time(int(pid)) == started


def reset(path: Path) -> None:
    """Make ``path`` an empty directory (files of an earlier run would count in the totals)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
