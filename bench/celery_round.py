"""One worker's round of the Celery part: publish the messages, start the worker, time it, stop.

The messages are all in the queue before the worker starts, so the worker runs flat out from its
first task; the harness watches ``log.txt`` and times from line ``skipped`` to the last line,
which leaves out the worker's start-up and its first tasks. The CPU time is the worker's process
tree (main process and pool) over the same span.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from bench.celery_workers import (
    WORKERS,
    publish_plain,
    publish_runs,
    stop_worker,
    worker_command,
    worker_env,
)
from bench.common import CLK_TCK, ROOT, LineCounter, children
from bench.otlp_sink import Sink
from bench.redis_server import Redis

MESSAGE = "message to user@example.com\n"


def publish(worker: str, url: str, count: int, conf: dict[str, Any]) -> float:
    """Put ``count`` messages for ``worker`` in the queue; seconds it took."""
    t0 = time.monotonic()
    if worker.startswith("ours"):
        from observability.tasks.envelope import TaskEnvelope

        def envelope() -> TaskEnvelope:
            return TaskEnvelope(name="write_log", args=(MESSAGE,))

        publish_runs(url, count, envelope, asdict)
    else:  # the bare worker with Celery's defaults publishes with them too
        publish_plain(url, count, conf if worker != "bare" else {}, "bench.write_log", [MESSAGE])
    return time.monotonic() - t0


def whole_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of all its descendants, live (read recursively: a pool child's
    own helper processes too) or already reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    return own + sum(whole_tree_cpu_seconds(child) for child in children(pid))


class Timing(NamedTuple):
    """What watching a worker's ``log.txt`` saw (monotonic times, CPU seconds of its tree)."""

    started: float  # the worker was started
    t_skip: float  # line ``skipped`` was written
    t_end: float  # the last line was written
    cpu_skip: float
    cpu_end: float
    lines: int  # lines in the end (a little after the last one expected)
    left: int  # messages left in the queue


def watch(
    worker: str,
    proc: subprocess.Popen[bytes],
    workdir: Path,
    redis: Redis,
    opts: argparse.Namespace,
    pids: set[int],
) -> Timing:
    """Time the worker from line ``--celery-skip`` to the last line; its pool processes go into
    ``pids`` (to kill any it leaves behind)."""
    count, skip = opts.celery_tasks, opts.celery_skip
    counter = LineCounter(workdir / "data" / "log.txt")
    started = time.monotonic()
    t_skip = counter.wait_for(skip, 60, interval=0.005)
    cpu_skip = whole_tree_cpu_seconds(proc.pid)
    pids.update(children(proc.pid))
    if t_skip is None:
        raise RuntimeError(
            f"celery {worker}: no task done within 60 s: "
            f"{(workdir / 'stderr.log').read_text()[-2000:]}"
        )
    t_end = counter.wait_for(count, opts.drain_timeout, interval=0.005)
    cpu_end = whole_tree_cpu_seconds(proc.pid)
    pids.update(children(proc.pid))
    if t_end is None:
        raise RuntimeError(f"celery {worker}: {counter.count()}/{count} tasks done")
    time.sleep(0.3)
    lines = counter.count()
    left = int(redis.client.llen("celery"))
    return Timing(started, t_skip, t_end, cpu_skip, cpu_end, lines, left)


def run_worker(
    worker: str,
    redis: Redis,
    opts: argparse.Namespace,
    round_no: int,
    tmp: Path,
    conf: dict[str, Any],
) -> dict[str, Any]:
    """One round of ``worker``: its messages published, then the worker started, timed and
    stopped (with its OTLP receiver, for ``ours-*``); the round's JSON record."""
    workdir = tmp / f"{worker}-r{round_no}"
    data = workdir / "data"
    data.mkdir(parents=True)
    count, skip = opts.celery_tasks, opts.celery_skip
    redis.flush()
    published_s = publish(worker, redis.url, count, conf)
    spec = WORKERS[worker]
    sink = Sink(workdir / "sink") if spec.sampled is not None else None
    endpoint = sink.endpoint if sink is not None else None
    env = worker_env(worker, redis.url, data, conf, opts.celery_concurrency, endpoint)
    hostname = f"bench-{worker}-{os.getpid()}-r{round_no}"
    cmd = worker_command(
        spec.module, hostname, opts.celery_pool, opts.celery_concurrency, spec.events
    )
    stdout = open(workdir / "stdout.log", "wb")  # noqa: SIM115
    stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    pids: set[int] = set()
    try:
        t = watch(worker, proc, workdir, redis, opts, pids)
    finally:
        code = stop_worker(proc, hostname, pids)
        stdout.close()
        stderr.close()
        sink_stats = sink.stop() if sink is not None else {}
    measured = count - skip
    return {
        "worker": worker,
        "round": round_no,
        "tasks": count,
        "skipped": skip,
        "lines_written": t.lines,
        "left_in_queue": t.left,
        "publish_seconds": published_s,
        "startup_seconds": t.t_skip - t.started,
        "tasks_per_s": measured / (t.t_end - t.t_skip),
        "cpu_us_per_task": (t.cpu_end - t.cpu_skip) / measured * 1e6,
        "exit_code": code,
        "command": cmd[2:],
        "otlp_sink": sink_stats,
    }
