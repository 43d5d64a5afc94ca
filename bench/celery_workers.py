"""The workers of the Celery part: what each one is, its command line, environment and stop.

A worker is a ``celery worker`` subprocess of the harness: the bare tutorial task
(``bench/celery_bare.py``), alone or with the project's Celery settings, or the project's own
worker (``service.worker``) with its spans exported to a local receiver. Its hostname carries the
harness's pid and the round, so that its leftover pool processes, if any, can be told apart from
everything else on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from bench.apps import SAMPLED_10, SAMPLED_100
from bench.common import free_port, stop_process

if TYPE_CHECKING:
    from observability.tasks.envelope import TaskEnvelope


class WorkerSpec(NamedTuple):
    """A worker of the part: the ``celery -A`` module, what it is, whether it sends task events
    (``-E``), and the share of spans it samples (``"10"``, ``"100"``; None: no tracing)."""

    module: str
    description: str
    events: bool = False
    sampled: str | None = None


WORKERS: dict[str, WorkerSpec] = {
    "bare": WorkerSpec(
        "bench.celery_bare", "the tutorial's write_log as a bare Celery task, defaults"
    ),
    "bare-project-conf": WorkerSpec(
        "bench.celery_bare",
        "the same bare task with every one of the project's Celery settings (late acks, "
        "prefetch 1, time limits, result backend, STARTED state, the reliable Redis transport "
        "and its options)",
    ),
    "bare-project-conf-otel-10": WorkerSpec(
        "bench.celery_bare_otel",
        "the stack a Celery user would otherwise run: bare-project-conf plus task events (-E, "
        "what celery-exporter and Flower read) and opentelemetry-instrumentation-celery, spans "
        "sampled 10% exported over OTLP/HTTP by the SDK's batch processor",
        events=True,
        sampled="10",
    ),
    "bare-project-conf-otel-100": WorkerSpec(
        "bench.celery_bare_otel", "the same, spans sampled 100%", events=True, sampled="100"
    ),
    "ours-sampled-10": WorkerSpec(
        "service.worker",
        "the project's worker: runner with metrics, JSON logs to a file, spans sampled 10% "
        "exported over OTLP/HTTP",
        sampled="10",
    ),
    "ours-sampled-100": WorkerSpec("service.worker", "the same, spans sampled 100%", sampled="100"),
    "ours-sampled-10-events": WorkerSpec(
        "service.worker", "ours-sampled-10 with task events on (-E)", events=True, sampled="10"
    ),
}
DEFAULT_WORKERS = tuple(WORKERS)
BASELINE = "bare"
PROJECT_BASELINE = "bare-project-conf"
OTEL_STACKS = ("bare-project-conf-otel-10", "bare-project-conf-otel-100")
# every setting of observability/backends/celery_app.py that changes what a run costs (not the
# pool's)
PROJECT_CONF_KEYS = (
    "broker_transport",
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


def project_conf(url: str) -> dict[str, Any]:
    """The project's Celery settings that ``bare-project-conf`` takes over
    (``PROJECT_CONF_KEYS``)."""
    from observability.backends.celery_app import create_celery_app
    from service.settings import Settings

    app = create_celery_app(Settings(broker_url=url))
    return {k: app.conf[k] for k in PROJECT_CONF_KEYS if k in app.conf}


def worker_command(
    module: str, hostname: str, pool: str, concurrency: int, events: bool = False
) -> list[str]:
    """The ``celery worker`` command line; ``events``: with ``-E`` (task events sent)."""
    return [
        sys.executable, "-m", "celery", "-A", module, "worker",
        "--pool", pool, "-c", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"{hostname}@%h", *(["-E"] if events else []),
    ]  # fmt: skip


def worker_env(
    worker: str,
    broker_url: str,
    data: Path,
    conf: dict[str, Any],
    concurrency: int,
    endpoint: str | None,
) -> dict[str, str]:
    """The worker's environment: the harness's without its ``NOTIFY_``/``OTEL_``/``BENCH_``
    variables, plus the broker, the data folder and the worker's own settings: the project's
    Celery settings ``conf`` for the ``bare-project-conf*`` workers, the sampler and the local
    OTLP receiver ``endpoint`` for those that trace, the service's settings for ``ours-*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_", "BENCH_"))}
    env |= {"NOTIFY_DATA_DIR": str(data), "BENCH_BROKER_URL": broker_url}
    spec = WORKERS[worker]
    if endpoint is not None:
        env |= SAMPLED_10 if spec.sampled == "10" else SAMPLED_100
        env |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    if worker.startswith("ours"):
        env |= {
            "NOTIFY_BROKER_URL": broker_url,
            "NOTIFY_WORKER_METRICS_PORT": str(free_port()),
            "NOTIFY_LOG_FORMAT": "json",
            "NOTIFY_TASK_CONCURRENCY": str(concurrency),
        }
    elif worker.startswith(PROJECT_BASELINE):
        env["BENCH_CELERY_CONF"] = json.dumps(conf)
    return env


def publish_runs(
    url: str,
    count: int,
    envelope: Callable[[], TaskEnvelope],
    body: Callable[[TaskEnvelope], dict[str, Any]],
) -> None:
    """``count`` messages as the project publishes a task: the task's own Celery name on its
    queue, the envelope's id as task id, ``body(envelope)`` as the argument, masked reprs."""
    from observability.backends.celery_app import CELERY_QUEUE, create_celery_app
    from observability.backends.celery_message import celery_name, masked_reprs
    from service.settings import Settings

    app = create_celery_app(Settings(broker_url=url))
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            task = envelope()
            message = body(task)
            app.send_task(
                celery_name(task.name),
                args=[message],
                task_id=task.id,
                queue=CELERY_QUEUE,
                producer=producer,
                **masked_reprs(message),
            )
    app.close()


def publish_plain(
    url: str,
    count: int,
    conf: dict[str, Any],
    name: str,
    args: list[Any] | None = None,
    task_id: Callable[[], str | None] = lambda: None,
) -> None:
    """``count`` ``name`` tasks by a plain Celery app with ``conf`` (task id: Celery's own
    unless ``task_id`` gives one)."""
    from celery import Celery

    app = Celery("bench_bare_publisher", broker=url)
    app.conf.update(conf)
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(name, args=args, task_id=task_id(), producer=producer)
    app.close()


def stop_worker(proc: subprocess.Popen[bytes], hostname: str, pids: set[int]) -> int | None:
    """SIGTERM the worker, wait for it (killed if it does not exit), then kill the pool processes
    ``pids`` it left behind, if any; its exit code."""
    code = stop_process(proc, 30)
    for pid in pids:
        kill_if_ours(pid, hostname)
    return code


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
