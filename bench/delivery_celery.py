"""The delivery part's Celery rounds: the service's worker (``celery``) and a bare Celery worker
with the project's settings (``bare-celery``), run and timed the same way.

For both: ``warmup + messages`` tasks are published before the worker starts (``celery -A ...
worker --pool prefork -c --delivery-concurrency``, the bench's own redis-server), the worker is
timed from the arrival of message ``warmup`` at the sink (start-up left out) to the last, its
CPU is its process tree's (main process and pool) over that span.

* ``celery``: ``service.worker`` on the tasks the API publishes (``background_task.<name>`` with a
  ``TaskEnvelope``), spans 10% exported to a local OTLP receiver; p99 from its
  ``notification_delivery_duration_seconds`` histogram (two scrapes of its metrics port);
* ``bare-celery``: ``bench/celery_bare_smtp.py`` (``bench.send_mail``: the bare loop's message,
  one kept connection per process) with the project's Celery settings (``PROJECT_CONF_KEYS`` and
  its broker transport), published by a plain Celery app with the same settings; p99 from the
  timings its processes write, the same buckets.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench import histogram
from bench.celery_workers import (
    project_conf,
    publish_plain,
    publish_runs,
    stop_worker,
    worker_command,
    worker_env,
)
from bench.common import ROOT, NoiseMeter, children, proc_cpu_seconds, tree_cpu_seconds
from bench.delivery_round import LABELS, MESSAGE, METRIC, arrived, bucket_bounds, record, smtp_env
from bench.otlp_sink import Sink
from bench.redis_server import Redis
from bench.smtp_bare import RECIPIENT
from bench.smtp_sink import SmtpSink


def bare_conf(url: str) -> dict[str, Any]:
    """The settings of ``bare-celery``: the project's run-cost settings (``PROJECT_CONF_KEYS``,
    as the celery part's ``bare-project-conf``) plus its broker transport (the reliable Redis
    transport: how a message is taken and acknowledged)."""
    from observability.backends.celery_app import create_celery_app
    from service.settings import Settings

    conf = project_conf(url)
    transport = create_celery_app(Settings(broker_url=url)).conf.broker_transport
    if transport:
        conf["broker_transport"] = transport
    return conf


def publish(url: str, count: int) -> None:
    """``count`` tasks as the API publishes ``POST /send-notification/{email}``'s."""
    from observability.backends.celery_message import message_of
    from observability.tasks.envelope import TaskEnvelope

    def envelope() -> TaskEnvelope:
        return TaskEnvelope(name="write_log", args=(MESSAGE,), kwargs={"to": RECIPIENT})

    publish_runs(url, count, envelope, message_of)


def publish_bare(url: str, count: int, conf: dict[str, Any]) -> None:
    """``count`` ``bench.send_mail`` tasks, by a plain Celery app with ``conf`` (same queue,
    task ids like the API's: 32 hex digits)."""
    publish_plain(url, count, conf, "bench.send_mail", task_id=lambda: uuid.uuid4().hex)


class Span(NamedTuple):
    """A worker's timed span: monotonic times, CPU seconds, its scrapes before and after."""

    t0: float
    t_end: float
    cpu: float
    sink_cpu: float
    other: float | None
    code: int | None
    before: Any
    after: Any


def timed_worker(
    cmd: list[str],
    env: dict[str, str],
    hostname: str,
    sink: SmtpSink,
    opts: argparse.Namespace,
    helpers: Callable[[], float],
    scrape: Callable[[], Any],
    workdir: Path,
) -> Span:
    """Start the worker, time it from the arrival of message ``warmup`` to the last, stop it.
    ``helpers``: CPU seconds of the harness's processes it uses (Redis, OTLP receiver)."""
    n, warmup = opts.delivery_messages, opts.delivery_warmup
    with open(workdir / "worker.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    pids: set[int] = set()
    try:
        t0 = arrived(sink, warmup, 120, f"{hostname} start-up")
        pids.update(children(proc.pid))
        before = scrape()
        # CPU from after the scrape (its cost left out; a few ms of the span uncounted)
        cpu0, sink_cpu0, helpers0 = tree_cpu_seconds(proc.pid), sink.cpu_seconds(), helpers()
        meter = NoiseMeter()
        t_end = arrived(sink, warmup + n, opts.delivery_timeout, hostname)
        cpu, sink_cpu = tree_cpu_seconds(proc.pid) - cpu0, sink.cpu_seconds() - sink_cpu0
        other = meter.other_cores(cpu + sink_cpu + helpers() - helpers0)
        pids.update(children(proc.pid))
        after = scrape()
    finally:
        code = stop_worker(proc, hostname, pids)
    return Span(t0, t_end, cpu, sink_cpu, other, code, before, after)


def run_celery(
    sink: SmtpSink, redis: Redis, opts: argparse.Namespace, workdir: Path, round_no: int
) -> dict[str, Any]:
    """``celery -A service.worker worker`` (prefork) on the tasks the API publishes."""
    n, warmup, conc = opts.delivery_messages, opts.delivery_warmup, opts.delivery_concurrency
    data = workdir / "data"
    data.mkdir(parents=True)
    redis.flush()
    publish(redis.url, warmup + n)
    otlp = Sink(workdir / "otlp")

    def helpers() -> float:  # Redis and the OTLP receiver: processes of the harness, not reaped
        return proc_cpu_seconds(redis.proc.pid) + otlp.cpu_seconds()

    env = worker_env("ours-sampled-10", redis.url, data, {}, conc, otlp.endpoint)
    env |= smtp_env(sink, conc) | {"NOTIFY_TASK_BACKEND": "celery"}
    metrics = f"http://127.0.0.1:{env['NOTIFY_WORKER_METRICS_PORT']}/metrics"
    hostname = f"bench-delivery-{os.getpid()}-r{round_no}"
    cmd = worker_command("service.worker", hostname, "prefork", conc)
    try:
        s = timed_worker(
            cmd, env, hostname, sink, opts, helpers,
            lambda: histogram.scrape_buckets(metrics, METRIC, LABELS), workdir,
        )  # fmt: skip
    finally:
        otlp_stats = otlp.stop()
    p99 = histogram.quantile(0.99, histogram.difference(s.after, s.before))
    r = record("celery", n, s.t_end - s.t0, s.cpu, p99, s.sink_cpu)
    spans = otlp_stats.get("spans", 0) / (warmup + n)
    r |= {"exit_code": s.code, "spans_per_msg": spans, "other_load_cores": s.other}
    return r


def run_bare_celery(
    sink: SmtpSink,
    redis: Redis,
    opts: argparse.Namespace,
    workdir: Path,
    round_no: int,
    conf: dict[str, Any],
) -> dict[str, Any]:
    """``celery -A bench.celery_bare_smtp worker`` (prefork, the project's settings) on
    ``bench.send_mail`` tasks published the same way."""
    n, warmup, conc = opts.delivery_messages, opts.delivery_warmup, opts.delivery_concurrency
    data = workdir / "data"
    data.mkdir(parents=True)
    redis.flush()
    publish_bare(redis.url, warmup + n, conf)
    env = worker_env("bare-project-conf", redis.url, data, conf, conc, None)
    env["BENCH_SMTP_PORT"] = str(sink.port)
    hostname = f"bench-delivery-bare-{os.getpid()}-r{round_no}"
    cmd = worker_command("bench.celery_bare_smtp", hostname, "prefork", conc)
    s = timed_worker(
        cmd, env, hostname, sink, opts, lambda: proc_cpu_seconds(redis.proc.pid),
        lambda: None, workdir,
    )  # fmt: skip
    latencies = timed_latencies(data, warmup)
    buckets = histogram.bucketed(latencies, bucket_bounds())
    r = record(
        "bare-celery", n, s.t_end - s.t0, s.cpu, histogram.quantile(0.99, buckets), s.sink_cpu
    )
    exact = histogram.exact(0.99, latencies)
    r |= {
        "p99_exact_ms": None if exact is None else exact * 1e3,
        "exit_code": s.code,
        "other_load_cores": s.other,
        "timings": len(latencies),
    }
    return r


def timed_latencies(data: Path, warmup: int) -> list[float]:
    """The worker processes' per-message timings, in order of their end, the first ``warmup``
    (the untimed messages, near enough: the pool sends eight at a time) left out."""
    rows: list[tuple[float, float]] = []
    for path in data.glob("latencies-*.txt"):
        for line in path.read_text().splitlines():
            end, seconds = line.split()
            rows.append((float(end), float(seconds)))
    rows.sort()
    return [seconds for _, seconds in rows[warmup:]]
