"""Multiprocess metric files: what is dropped when a process is gone, what a fresh start gets."""

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from observability.metrics import directory as metrics_dir
from observability.metrics.directory import alive
from observability.metrics.multiprocess import exposition_registry, reap_dead


def dead_pid() -> int:
    """The pid of a process that has exited and been waited for."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_reaping_drops_only_live_gauges_of_dead_processes(tmp_path: Path) -> None:
    """A dead process's live gauges go; its counters and every file of a live process stay."""
    gone, me = dead_pid(), os.getpid()
    names = [
        f"gauge_livesum_{gone}.db",
        f"gauge_liveall_{gone}.db",
        f"gauge_max_{gone}.db",
        f"counter_{gone}.db",
        f"histogram_{gone}.db",
        f"gauge_livesum_{me}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert not alive(gone) and alive(me)
    assert reap_dead(tmp_path) == [gone]
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(set(names) - {f"gauge_livesum_{gone}.db", f"gauge_liveall_{gone}.db"})


def test_reset_leaves_an_empty_directory(tmp_path: Path) -> None:
    """Files of an earlier run never survive a reset (they would count in the totals)."""
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_1.db").write_bytes(b"stale")
    metrics_dir.reset(path)
    assert path.is_dir() and not list(path.iterdir())


def test_a_file_still_being_created_does_not_break_the_scrape(tmp_path: Path) -> None:
    """A process that has created its metric file but not sized it yet (a prefork child
    starting) is skipped: the scrape still returns everyone else's values, not an error."""
    script = "from prometheus_client import Counter; Counter('runs', 'Runs.').inc(3)"
    env = os.environ | {metrics_dir.ENV: str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    (tmp_path / "counter_999999999.db").write_bytes(b"")  # created, not sized yet
    text = generate_latest(exposition_registry(tmp_path)).decode()
    assert "runs_total 3.0" in text


def test_a_claim_after_prometheus_client_was_imported_still_writes_files(tmp_path: Path) -> None:
    """A process that imported prometheus_client before claiming its directory (celery's command
    line loads plugins such as Flower's first) still writes its metrics to the directory."""
    script = (
        "import prometheus_client\n"
        "from observability.metrics import directory, multiprocess\n"
        "path = directory.claim('notify-test-metrics')\n"
        "directory.reset(path)\n"
        "prometheus_client.Counter('runs', 'Runs.').inc(2)\n"
        "assert multiprocess.enabled()\n"
        "print(path)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != metrics_dir.ENV} | {"TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, text=True, capture_output=True
    )
    path = Path(done.stdout.strip())
    assert path.parent == tmp_path
    assert "runs_total 2.0" in generate_latest(exposition_registry(path)).decode()


def test_with_the_pid_cached_a_forked_child_writes_files_of_its_own(tmp_path: Path) -> None:
    """With the worker's cached pid, a forked child's values go to files under its own pid."""
    script = (
        "import os\n"
        "from observability.metrics import directory\n"
        "path = directory.claim('notify-test-metrics')\n"
        "directory.reset(path)\n"
        "from observability.backends.worker_process import cache_pid_for_metrics\n"
        "cache_pid_for_metrics()\n"
        "import prometheus_client\n"
        "runs = prometheus_client.Counter('runs', 'Runs.')\n"
        "runs.inc()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    runs.inc(5)\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "runs.inc()\n"
        "print(path, os.getpid(), child)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != metrics_dir.ENV} | {"TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, text=True, capture_output=True
    )
    folder, parent, child = done.stdout.split()
    path = Path(folder)
    assert {p.name for p in path.glob("counter_*.db")} == {
        f"counter_{parent}.db",
        f"counter_{child}.db",
    }
    assert "runs_total 7.0" in generate_latest(exposition_registry(path)).decode()
