"""One round of one variant of the delivery part: the bare loops and the service in-process
(the Celery workers' rounds: ``delivery_celery.py``); each sends ``warmup`` untimed messages,
then ``messages`` timed ones, to the same SMTP sink (``bench/smtp_sink.py``), which tells when
message N arrived.

Every record has the same fields: msgs/s over the timed messages (from the first timed send or
request to the arrival of the last message at the sink), the CPU seconds of the sender's
process tree over that span, the p99 of the per-message delivery latency read the Prometheus
way (``histogram_quantile`` over the service's ``notification_delivery_duration_seconds``
buckets, or the bare loop's timings in the same buckets) and the sink's CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import histogram
from bench.apps import OURS, SAMPLED_10, AppSpec
from bench.common import ROOT, NoiseMeter, tree_cpu_seconds
from bench.load import LoadGenerator
from bench.server import Server
from bench.smtp_bare import RECIPIENT, SENDER
from bench.smtp_sink import SmtpSink

METRIC = "notification_delivery_duration_seconds"
LABELS = {"channel": "smtp", "result": "delivered"}
PATH = f"/send-notification/{RECIPIENT}"
MESSAGE = f"message to {RECIPIENT}\n"  # what that route puts in the task


def smtp_env(sink: SmtpSink, concurrency: int) -> dict[str, str]:
    """The service's SMTP settings: plain SMTP to the sink, same sender as the bare loop."""
    return {
        "NOTIFY_EMAIL_CHANNEL": "smtp",
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": str(sink.port),
        "NOTIFY_SMTP_SECURITY": "none",
        "NOTIFY_SMTP_FROM": SENDER,
        "NOTIFY_DELIVERY_TIMEOUT_SECONDS": "10",
        "NOTIFY_TASK_CONCURRENCY": str(concurrency),
    }


def record(
    variant: str, n: int, seconds: float, cpu: float, p99: float | None, sink_cpu: float
) -> dict[str, Any]:
    return {
        "variant": variant,
        "messages": n,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "cpu_us_per_msg": cpu / n * 1e6,
        "p99_ms": None if p99 is None else p99 * 1e3,
        "sink_cpu_us_per_msg": sink_cpu / n * 1e6,
    }


def arrived(sink: SmtpSink, n: int, timeout: float, what: str) -> float:
    t = sink.wait_for(n, timeout)
    if t is None:
        raise RuntimeError(f"delivery {what}: {sink.count()}/{n} messages at the sink")
    return t


def run_bare(
    sink: SmtpSink, opts: argparse.Namespace, workdir: Path, variant: str = "bare"
) -> dict[str, Any]:
    """The bare loop (``bench/smtp_bare.py``) in a process of its own; ``bare-compat32``: its
    messages built as the service builds them (``--build compat32``)."""
    n, warmup = opts.delivery_messages, opts.delivery_warmup
    build = "compat32" if variant == "bare-compat32" else "modern"
    cmd = [
        sys.executable, "-m", "bench.smtp_bare", "--port", str(sink.port), "--count", str(n),
        "--warmup", str(warmup), "--threads", str(opts.delivery_concurrency), "--build", build,
    ]  # fmt: skip
    sink_cpu0, meter = sink.cpu_seconds(), NoiseMeter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"delivery {variant} loop failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    t_end = arrived(sink, warmup + n, opts.delivery_timeout, variant)
    sink_cpu = sink.cpu_seconds() - sink_cpu0
    other = meter.other_cores(sink_cpu)  # the bare loop's process was reaped: counted already
    buckets = histogram.bucketed(out["latencies"], bucket_bounds())
    r = record(
        variant,
        n,
        t_end - out["started"],
        out["cpu_seconds"],
        histogram.quantile(0.99, buckets),
        sink_cpu,
    )
    exact = histogram.exact(0.99, out["latencies"])
    r |= {"p99_exact_ms": None if exact is None else exact * 1e3, "other_load_cores": other}
    out.pop("latencies")
    (workdir / f"{variant}.json").write_text(json.dumps(out))
    return r


def bucket_bounds() -> tuple[float, ...]:
    from observability.metrics.delivery import DELIVERY_BUCKETS

    return DELIVERY_BUCKETS


def run_inprocess(
    sink: SmtpSink, load: LoadGenerator, opts: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """The service under uvicorn (10% sampled, spans exported), driven by POSTs."""
    n, warmup = opts.delivery_messages, opts.delivery_warmup
    conc = opts.delivery_http_concurrency
    spec = AppSpec(
        "ours-inprocess", "service.main:create_app", True,
        OURS | SAMPLED_10 | smtp_env(sink, opts.delivery_concurrency), "file", True,
        "the service, SMTP channel, spans sampled 10% exported",
    )  # fmt: skip
    server = Server(spec, workdir)
    metrics = f"http://127.0.0.1:{server.port}/metrics"
    try:
        warm = load.run(server.port, PATH, warmup, conc)
        arrived(sink, warm.ok, opts.delivery_timeout, "in-process warm-up")
        before = histogram.scrape_buckets(metrics, METRIC, LABELS)
        cpu0, sink_cpu0, own0 = tree_cpu_seconds(server.proc.pid), sink.cpu_seconds(), own_cpu()
        otlp0, meter = server.sink_cpu_seconds(), NoiseMeter()
        t0 = time.monotonic()
        result = load.run(server.port, PATH, n, conc)
        t_end = arrived(sink, warm.ok + result.ok, opts.delivery_timeout, "in-process")
        cpu, own = tree_cpu_seconds(server.proc.pid) - cpu0, own_cpu() - own0
        sink_cpu = sink.cpu_seconds() - sink_cpu0
        other = meter.other_cores(cpu + sink_cpu + server.sink_cpu_seconds() - otlp0)
        after = histogram.scrape_buckets(metrics, METRIC, LABELS)
    finally:
        code, otlp = server.stop()
    p99 = histogram.quantile(0.99, histogram.difference(after, before))
    r = record("inprocess", result.ok, t_end - t0, cpu, p99, sink_cpu)
    r |= {
        "rejected": result.rejected + result.errors,
        "http_p99_ms": result.p99_ms,
        "client_cpu_us_per_msg": own / max(1, result.ok) * 1e6,
        "exit_code": code,
        "spans_per_msg": otlp.get("spans", 0) / max(1, warm.ok + result.ok),
        "other_load_cores": other,
    }
    return r


def own_cpu() -> float:
    """CPU seconds of the harness (the asyncio load generator) and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
