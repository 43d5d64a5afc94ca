"""Part ``delivery``: e-mails per second through a local SMTP server, the service (in-process
and on Celery) against a bare loop sending the same messages, in the same run.

One SMTP sink for the whole part (``bench/smtp_sink.py``: aiosmtpd on uvloop in a process of
its own, accepts and counts every message, tells the harness when message N arrived). Each
round runs every variant once, in alternating order; each sends ``--delivery-warmup`` untimed
messages (they open the connections), then ``--delivery-messages`` timed ones:

* ``bare``: ``bench/smtp_bare.py``, a plain loop: the same headers (From, To, Subject, Date,
  Message-ID) and body built with ``EmailMessage`` (the modern API), ``smtplib.SMTP``, one
  connection per thread kept open, ``--delivery-concurrency`` threads; nothing observed;
* ``bare-compat32``: the same loop, each message built as the service builds it
  (``SmtpChannel.message``: compat32 ``MIMEText`` for ASCII headers, ``Outgoing.send_on``);
* ``inprocess``: the service under uvicorn (``NOTIFY_EMAIL_CHANNEL=smtp`` to the sink, spans
  sampled 10% exported to a local OTLP receiver, JSON logs to a file, metrics), driven by
  ``POST /send-notification/{email}`` (``--loadgen``, ``--delivery-http-concurrency``
  connections); its ``--delivery-concurrency`` run slots send; timed from the first request;
* ``celery``: ``celery -A service.worker worker --pool prefork -c --delivery-concurrency``
  (same settings, ``NOTIFY_TASK_BACKEND=celery``: its delivered-ledger in Redis) on the tasks
  the API would publish, all in the queue before it starts, on a redis-server of the bench's
  own; timed from the arrival of message ``warmup`` (start-up left out);
* ``bare-celery``: a bare Celery worker (``bench/celery_bare_smtp.py``) with the project's
  Celery settings, prefork, same concurrency, sending the bare loop's message on one kept
  connection per process; published and timed as ``celery``.

Ratios: msgs/s over the bare loop's of the same round, median over rounds (goal >= 0.80 for the
service's variants); also ``celery`` over ``bare-celery`` and ``inprocess`` over
``bare-compat32`` (informational: what the instrumentation costs on equal footing). Timings are
reported, never asserted. Rounds: ``delivery_round.py``, ``delivery_celery.py``; report:
``delivery_report.py``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.common import selection
from bench.delivery_celery import bare_conf, run_bare_celery, run_celery
from bench.delivery_report import goals, markdown
from bench.delivery_round import run_bare, run_inprocess
from bench.load import LoadGenerator, resolve_loadgen
from bench.redis_server import Redis
from bench.smtp_sink import SmtpSink

__all__ = ["add_arguments", "goals", "markdown", "run"]

GOAL = 0.80
VARIANTS = {
    "bare": "a bare loop: the same headers and body built with EmailMessage (the modern API), "
    "smtplib send_message, one connection per thread",
    "bare-compat32": "the same loop, each message built as the service builds it (compat32 "
    "MIMEText for ASCII headers: SmtpChannel.message, Outgoing.send_on)",
    "inprocess": "the service under uvicorn, its run slots sending (POST /send-notification)",
    "bare-celery": "a bare Celery worker (prefork, same concurrency) with the project's Celery "
    "settings, sending the bare loop's message on one kept connection per process",
    "celery": "the service's Celery worker (prefork), on the tasks the API publishes",
}
BASELINE = "bare"
# the service's variants and the baseline of equal footing each is also read against
PAIRS = {"inprocess": "bare-compat32", "celery": "bare-celery"}
MEASURES = ("msgs_per_s", "cpu_us_per_msg", "p99_ms", "sink_cpu_us_per_msg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("delivery")
    group.add_argument("--delivery-messages", type=int, help="timed e-mails per round (2000)")
    group.add_argument("--delivery-warmup", type=int, help="untimed e-mails first (100)")
    group.add_argument("--delivery-rounds", type=int, help="rounds (3)")
    group.add_argument("--delivery-concurrency", type=int, default=8, help="senders")
    group.add_argument("--delivery-http-concurrency", type=int, default=16)
    group.add_argument("--delivery-timeout", type=float, default=300.0, help="seconds")
    group.add_argument("--delivery-variants", default=",".join(VARIANTS), help="comma-separated")


def defaults(opts: argparse.Namespace) -> None:
    opts.delivery_messages = opts.delivery_messages or (400 if opts.quick else 2000)
    opts.delivery_warmup = opts.delivery_warmup or (50 if opts.quick else 100)
    opts.delivery_rounds = opts.delivery_rounds or (1 if opts.quick else 3)


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    defaults(opts)
    variants = selection(opts.delivery_variants, VARIANTS, BASELINE, "delivery variant(s)")
    print(
        f"delivery: {opts.delivery_messages} e-mails (+{opts.delivery_warmup} warm-up) x "
        f"{len(variants)} variants x {opts.delivery_rounds} rounds, "
        f"{opts.delivery_concurrency} senders",
        flush=True,
    )
    sink = SmtpSink(tmp / "smtp-sink")
    redis = Redis(tmp / "redis") if {"celery", "bare-celery"} & set(variants) else None
    try:
        conf = bare_conf(redis.url) if redis is not None and "bare-celery" in variants else {}
        runs = run_rounds(variants, sink, redis, opts, tmp, conf)
    finally:
        sink.stop()
        if redis is not None:
            redis.stop()
    return {
        "config": {
            "messages": opts.delivery_messages,
            "warmup": opts.delivery_warmup,
            "rounds": opts.delivery_rounds,
            "concurrency": opts.delivery_concurrency,
            "http_concurrency": opts.delivery_http_concurrency,
            "loadgen": resolve_loadgen(opts.loadgen),
            "variants": variants,
            "about": {v: VARIANTS[v] for v in variants},
            "goal": GOAL,
            "bare_celery_conf": conf,
        },
        "medians": medians(runs, variants),
        "ratios": ratios(runs, variants),
        "ratios_vs": {
            base: ratios(runs, [base, ours], base)
            for ours, base in PAIRS.items()
            if ours in variants and base in variants
        },
        "runs": runs,
    }


def run_rounds(
    variants: list[str],
    sink: SmtpSink,
    redis: Redis | None,
    opts: argparse.Namespace,
    tmp: Path,
    conf: dict[str, Any],
) -> list[dict[str, Any]]:
    """Every round, every variant once, in alternating order; the runs' records."""
    load = LoadGenerator(resolve_loadgen(opts.loadgen), tmp)
    runs: list[dict[str, Any]] = []
    for round_no in range(opts.delivery_rounds):
        for variant in variants if round_no % 2 == 0 else variants[::-1]:
            workdir = tmp / f"{variant}-r{round_no}"
            workdir.mkdir()
            sink.reset()
            if variant in ("bare", "bare-compat32"):
                r = run_bare(sink, opts, workdir, variant)
            elif variant == "inprocess":
                r = run_inprocess(sink, load, opts, workdir)
            elif variant == "bare-celery":
                assert redis is not None
                r = run_bare_celery(sink, redis, opts, workdir, round_no, conf)
            else:
                assert redis is not None
                r = run_celery(sink, redis, opts, workdir, round_no)
            r["round"] = round_no
            print(
                f"  round {round_no} {variant:<13} {r['msgs_per_s']:7.0f} msgs/s  "
                f"{r['cpu_us_per_msg']:6.0f} CPU µs/msg  p99 {r['p99_ms'] or 0:6.1f} ms  "
                f"sink {r['sink_cpu_us_per_msg']:4.0f} µs/msg",
                flush=True,
            )
            runs.append(r)
    return runs


def medians(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant, the median over rounds of every measure (None if never measured)."""
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        out[v] = {}
        for key in (*MEASURES, "p99_exact_ms", "client_cpu_us_per_msg", "spans_per_msg"):
            values = [r[key] for r in mine if r.get(key) is not None]
            out[v][key] = statistics.median(values) if values else None
    return out


def ratios(
    runs: list[dict[str, Any]], variants: list[str], base: str = BASELINE
) -> dict[str, float]:
    """Per variant, the median over rounds of its msgs/s over ``base``'s of that round."""
    of_base = {r["round"]: r["msgs_per_s"] for r in runs if r["variant"] == base}
    return {
        v: statistics.median(
            r["msgs_per_s"] / of_base[r["round"]] for r in runs if r["variant"] == v
        )
        for v in variants
        if v != base
    }
