"""Part ``celery``: an instrumented Celery worker vs a bare one, same task, same Redis.

A Redis of the benchmark's own (``redis-server`` on a free port, nothing on disk; the machine's
Redis is never touched). For each worker and round: ``--celery-tasks`` messages are published
first, then the worker starts (``--pool prefork -c 2`` by default, ``--without-gossip
--without-mingle --without-heartbeat``, log level WARNING); the harness watches ``log.txt`` and
takes tasks/s = (tasks - skipped) / (time of line ``skipped`` .. time of the last line), which
leaves out the worker's start-up and its first tasks. Workers:

* ``bare``: ``celery -A bench.celery_bare worker``: the tutorial's ``write_log``
  (``open(log, 'a').write(message)``) as a plain Celery task, Celery's default settings;
* ``bare-project-conf``: the same bare task with the project's Celery settings (late acks,
  reject on worker lost, prefetch 1, time limits, results and ``STARTED`` state stored in Redis,
  the transport options: ``PROJECT_CONF_KEYS``): what the configuration costs, apart from the
  instrumentation;
* ``ours-sampled-100`` / ``ours-sampled-10``: ``celery -A service.worker worker``, the project's
  worker (runner: metrics, span per run exported over OTLP/HTTP to a local receiver, JSON logs to
  a file), messages as the API publishes them (``background_task.run`` with a ``TaskEnvelope``).

Ratios: ours / bare of the same round, median over rounds (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    LineCounter,
    children,
    free_port,
    selection,
    tree_cpu_seconds,
    wait_exit,
)
from bench.otlp_sink import Sink

SAMPLED_10 = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
SAMPLED_100 = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
WORKERS: dict[str, tuple[str, str]] = {
    "bare": ("bench.celery_bare", "the tutorial's write_log as a bare Celery task, defaults"),
    "bare-project-conf": (
        "bench.celery_bare",
        "the same bare task with the project's Celery settings (late acks, prefetch 1, time "
        "limits, result backend, STARTED state, transport options)",
    ),
    "ours-sampled-100": (
        "service.worker",
        "the project's worker: runner with metrics, JSON logs to a file, spans sampled 100% "
        "exported over OTLP/HTTP",
    ),
    "ours-sampled-10": ("service.worker", "the same, spans sampled 10%"),
}
DEFAULT_WORKERS = ("bare", "bare-project-conf", "ours-sampled-100", "ours-sampled-10")
# every setting of observability/backends/celery_app.py that changes what a run costs (not the
# pool's)
PROJECT_CONF_KEYS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_soft_time_limit",
    "task_time_limit",
    "task_track_started",
    "result_backend",
    "result_expires",
    "result_backend_transport_options",
    "redis_socket_connect_timeout",
    "redis_socket_timeout",
    "worker_prefetch_multiplier",
    "worker_deduplicate_successful_tasks",
    "worker_send_task_events",
    "broker_transport_options",
    "task_default_queue",
)
BASELINE = "bare"
GOAL = 0.95
MESSAGE = "message to user@example.com\n"


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
        if self.proc.poll() is None:
            self.proc.terminate()
        wait_exit(self.proc, 20)
        self._log.close()


def project_conf(url: str) -> dict[str, Any]:
    from observability.backends.celery_app import create_celery_app
    from service.settings import Settings

    app = create_celery_app(Settings(broker_url=url))
    return {k: app.conf[k] for k in PROJECT_CONF_KEYS if k in app.conf}


def publish(worker: str, url: str, count: int, conf: dict[str, Any]) -> float:
    """Put ``count`` messages for ``worker`` in the queue; seconds it took."""
    t0 = time.monotonic()
    if worker.startswith("ours"):
        from observability.backends.celery_app import CELERY_QUEUE, create_celery_app
        from observability.backends.celery_message import RUN_TASK
        from observability.tasks.envelope import TaskEnvelope
        from service.settings import Settings

        app = create_celery_app(Settings(broker_url=url))
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                envelope = TaskEnvelope(name="write_log", args=(MESSAGE,))
                app.send_task(
                    RUN_TASK,
                    args=[asdict(envelope)],
                    task_id=envelope.id,
                    queue=CELERY_QUEUE,
                    producer=producer,
                )
    else:
        from celery import Celery

        app = Celery("bench_bare_publisher", broker=url)
        app.conf.update(conf)
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task("bench.write_log", args=[MESSAGE], producer=producer)
    app.close()
    return time.monotonic() - t0


def worker_command(module: str, hostname: str, pool: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", module, "worker",
        "--pool", pool, "-c", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"{hostname}@%h",
    ]  # fmt: skip


def kill_if_ours(pid: int, hostname: str) -> None:
    """Kill a leftover pool process of our worker: only if that pid still runs our worker's
    command line (a pid may have been reused by then)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if f"{hostname}@".encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_worker(
    worker: str,
    redis: Redis,
    opts: argparse.Namespace,
    round_no: int,
    tmp: Path,
    conf: dict[str, Any],
) -> dict[str, Any]:
    workdir = tmp / f"{worker}-r{round_no}"
    data = workdir / "data"
    data.mkdir(parents=True)
    count, skip = opts.celery_tasks, opts.celery_skip
    redis.flush()
    published_s = publish(worker, redis.url, count, conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_", "BENCH_"))}
    env |= {"NOTIFY_DATA_DIR": str(data), "BENCH_BROKER_URL": redis.url}
    sink = None
    if worker.startswith("ours"):
        sink = Sink(workdir / "sink")
        env |= SAMPLED_10 if worker.endswith("-10") else SAMPLED_100
        env |= {
            "NOTIFY_BROKER_URL": redis.url,
            "NOTIFY_WORKER_METRICS_PORT": str(free_port()),
            "NOTIFY_LOG_FORMAT": "json",
            "NOTIFY_TASK_CONCURRENCY": str(opts.celery_concurrency),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    elif worker == "bare-project-conf":
        env["BENCH_CELERY_CONF"] = json.dumps(conf)
    module = WORKERS[worker][0]
    hostname = f"bench-{worker}-{os.getpid()}-r{round_no}"
    cmd = worker_command(module, hostname, opts.celery_pool, opts.celery_concurrency)
    stdout = open(workdir / "stdout.log", "wb")  # noqa: SIM115
    stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    counter = LineCounter(data / "log.txt")
    started = time.monotonic()
    pids: set[int] = set()
    try:
        t_skip = counter.wait_for(skip, 60, interval=0.005)
        cpu_skip = tree_cpu_seconds(proc.pid)
        pids.update(children(proc.pid))
        if t_skip is None:
            raise RuntimeError(
                f"celery {worker}: no task done within 60 s: "
                f"{(workdir / 'stderr.log').read_text()[-2000:]}"
            )
        t_end = counter.wait_for(count, opts.drain_timeout, interval=0.005)
        cpu_end = tree_cpu_seconds(proc.pid)
        pids.update(children(proc.pid))
        if t_end is None:
            raise RuntimeError(f"celery {worker}: {counter.count()}/{count} tasks done")
        time.sleep(0.3)
        lines = counter.count()
        left = int(redis.client.llen("celery"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = wait_exit(proc, 30)
        for pid in pids:  # pool processes of this worker, should it have left any
            kill_if_ours(pid, hostname)
        stdout.close()
        stderr.close()
        sink_stats = sink.stop() if sink is not None else {}
    measured = count - skip
    return {
        "worker": worker,
        "round": round_no,
        "tasks": count,
        "skipped": skip,
        "lines_written": lines,
        "left_in_queue": left,
        "publish_seconds": published_s,
        "startup_seconds": t_skip - started,
        "tasks_per_s": measured / (t_end - t_skip),
        "cpu_us_per_task": (cpu_end - cpu_skip) / measured * 1e6,
        "exit_code": code,
        "command": cmd[2:],
        "otlp_sink": sink_stats,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("celery")
    group.add_argument("--celery-tasks", type=int, help="tasks per worker and round (5000)")
    group.add_argument("--celery-rounds", type=int, help="rounds (3)")
    group.add_argument("--celery-skip", type=int, help="first tasks not timed (200)")
    group.add_argument("--celery-pool", default="prefork")
    group.add_argument("--celery-concurrency", type=int, default=2)
    group.add_argument(
        "--celery-workers", default=",".join(DEFAULT_WORKERS), help="of: " + ", ".join(WORKERS)
    )


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    opts.celery_tasks = opts.celery_tasks or (1000 if opts.quick else 5000)
    opts.celery_rounds = opts.celery_rounds or (1 if opts.quick else 3)
    opts.celery_skip = opts.celery_skip or (100 if opts.quick else 200)
    if not hasattr(opts, "drain_timeout"):
        opts.drain_timeout = 120.0
    workers = selection(opts.celery_workers, WORKERS, BASELINE, "celery worker(s)")
    print(
        f"celery: {opts.celery_tasks} tasks x {len(workers)} workers x {opts.celery_rounds} "
        f"rounds, --pool {opts.celery_pool} -c {opts.celery_concurrency}",
        flush=True,
    )
    redis = Redis(tmp / "redis")
    runs: list[dict[str, Any]] = []
    try:
        conf = project_conf(redis.url)
        for round_no in range(opts.celery_rounds):
            order = workers if round_no % 2 == 0 else workers[::-1]
            for worker in order:
                r = run_worker(worker, redis, opts, round_no, tmp, conf)
                print(
                    f"  round {round_no} {worker:<18} {r['tasks_per_s']:7.0f} tasks/s  "
                    f"{r['cpu_us_per_task']:6.0f} CPU µs/task  lines {r['lines_written']}/"
                    f"{r['tasks']}  spans {r['otlp_sink'].get('spans', '-')}",
                    flush=True,
                )
                runs.append(r)
    finally:
        redis.stop()
    medians = {
        w: {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs if r["worker"] == w),
            "cpu_us_per_task": statistics.median(
                r["cpu_us_per_task"] for r in runs if r["worker"] == w
            ),
            "lines_lost": sum(r["tasks"] - r["lines_written"] for r in runs if r["worker"] == w),
            "spans_per_task": _median_spans(runs, w),
        }
        for w in workers
    }
    ratios: dict[str, dict[str, float]] = {}
    for base in (BASELINE, "bare-project-conf"):
        if base not in workers:
            continue
        by_round = {r["round"]: r for r in runs if r["worker"] == base}
        ratios[base] = {
            w: statistics.median(
                r["tasks_per_s"] / by_round[r["round"]]["tasks_per_s"]
                for r in runs
                if r["worker"] == w
            )
            for w in workers
            if w != base
        }
    return {
        "config": {
            "tasks": opts.celery_tasks,
            "rounds": opts.celery_rounds,
            "skipped": opts.celery_skip,
            "pool": opts.celery_pool,
            "concurrency": opts.celery_concurrency,
            "workers": workers,
            "project_conf": conf,
            "goal": GOAL,
        },
        "medians": medians,
        "ratios": ratios,
        "runs": runs,
    }


def _median_spans(runs: list[dict[str, Any]], worker: str) -> float | None:
    values = [
        r["otlp_sink"]["spans"] / r["tasks"]
        for r in runs
        if r["worker"] == worker and "spans" in r["otlp_sink"]
    ]
    return statistics.median(values) if values else None


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    medians, ratios = part["medians"], part["ratios"]
    out = [
        "## Celery: instrumented worker vs bare worker",
        "",
        f"Own redis-server; {cfg['tasks']} messages published before each worker starts; "
        f"`--pool {cfg['pool']} -c {cfg['concurrency']}`; tasks/s = (tasks - "
        f"{cfg['skipped']}) / (line {cfg['skipped']} .. last line of `log.txt`), start-up "
        f"excluded; CPU = worker and pool processes over the same span; median of "
        f"{cfg['rounds']} rounds, order alternating. Ratios: median of per-round pairs.",
        "",
        *(f"- `{w}`: {WORKERS[w][1]}" for w in cfg["workers"]),
        "",
        "| worker | tasks/s | vs bare | goal | vs bare-project-conf | CPU µs/task | "
        "spans/task | lines lost |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for w, m in medians.items():
        vs_bare = ratios.get(BASELINE, {}).get(w)
        vs_conf = ratios.get("bare-project-conf", {}).get(w)
        goal = "-"
        if w.startswith("ours") and vs_bare is not None:
            goal = f">= {cfg['goal']:.2f}: {'met' if vs_bare >= cfg['goal'] else 'not met'}"
        spans = m["spans_per_task"]
        out.append(
            f"| {w} | {m['tasks_per_s']:.0f} | "
            f"{'-' if vs_bare is None else f'{vs_bare:.2f}'} | {goal} | "
            f"{'-' if vs_conf is None else f'{vs_conf:.2f}'} | {m['cpu_us_per_task']:.0f} | "
            f"{'-' if spans is None else f'{spans:.2f}'} | {m['lines_lost']} |"
        )
    return "\n".join(out) + "\n"


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    goal = part["config"]["goal"]
    return [
        (f"Celery `{w}`: tasks/s >= {goal:.2f} of `bare`", f"{r:.2f}", r >= goal)
        for w, r in part["ratios"].get(BASELINE, {}).items()
        if w.startswith("ours")
    ]
