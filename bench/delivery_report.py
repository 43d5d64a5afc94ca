"""The delivery part's Markdown section and goal rows, from its JSON result alone (``python -m
bench --render`` rebuilds the report with these)."""

from __future__ import annotations

from typing import Any

from bench.common import fmt

LABEL = {"bare": "bare loop", "inprocess": "ours in-process", "celery": "ours on Celery"}


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    return "\n".join(
        [
            "## Delivery: e-mails/s through a local SMTP server vs a bare loop",
            "",
            f"One aiosmtpd sink (uvloop, own process) accepts every message; "
            f"{cfg['messages']} timed e-mails per variant and round after {cfg['warmup']} "
            f"untimed ones; {cfg['concurrency']} senders (threads, run slots, prefork "
            f"processes), each with one connection kept open. msgs/s = timed e-mails / (first "
            f"timed send or request .. arrival of the last at the sink). CPU = the sender's "
            f"process tree (the server with its span export helper; the worker with its pool) "
            f"over that span, per e-mail. p99 = `histogram_quantile(0.99)` of the service's "
            f'`notification_delivery_duration_seconds{{channel="smtp"}}` over the timed '
            f"e-mails; the bare loop's own timings in the same buckets (exact p99 in brackets). "
            f"In-process load: `{cfg['loadgen']}`, {cfg['http_concurrency']} connections. "
            f"Median of {cfg['rounds']} round(s), order alternating; ratios: median of "
            f"per-round ratios.",
            "",
            *(f"- `{v}`: {about}" for v, about in cfg["about"].items()),
            "",
            results_table(part),
            rounds_table(part),
        ]
    )


def results_table(part: dict[str, Any]) -> str:
    """One row per variant: medians, ratio to the bare loop, goal."""
    goal = part["config"]["goal"]
    out = [
        "| variant | msgs/s | vs bare | goal | p99 ms | CPU µs/msg | sink µs/msg | "
        "client µs/msg | spans/msg |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v, m in part["medians"].items():
        ratio = part["ratios"].get(v)
        verdict = "-"
        if ratio is not None:
            verdict = f">= {goal:.2f}x: {'met' if ratio >= goal else '**not met**'}"
        p99 = fmt(m["p99_ms"], ".1f")
        if m.get("p99_exact_ms") is not None:
            p99 += f" ({m['p99_exact_ms']:.1f})"
        out.append(
            f"| {LABEL.get(v, v)} | {fmt(m['msgs_per_s'], '.0f')} | "
            f"{'1.00' if v == 'bare' else fmt(ratio, '.2f')} | {verdict} | {p99} | "
            f"{fmt(m['cpu_us_per_msg'], '.0f')} | {fmt(m['sink_cpu_us_per_msg'], '.0f')} | "
            f"{fmt(m.get('client_cpu_us_per_msg'), '.0f')} | {fmt(m.get('spans_per_msg'), '.2f')} |"
        )
    return "\n".join(out) + "\n"


def rounds_table(part: dict[str, Any]) -> str:
    """Every run, for the spread; *other load*: CPU cores the rest of the machine kept busy
    meanwhile (should be ~0)."""
    out = [
        "| round | variant | msgs/s | seconds | p99 ms | CPU µs/msg | rejected | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in part["runs"]:
        out.append(
            f"| {r['round']} | {r['variant']} | {r['msgs_per_s']:.0f} | {r['seconds']:.2f} | "
            f"{fmt(r['p99_ms'], '.1f')} | {r['cpu_us_per_msg']:.0f} | {r.get('rejected', '-')} | "
            f"{fmt(r.get('other_load_cores'), '.2f')} |"
        )
    return "\n".join(out) + "\n"


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    goal = part["config"]["goal"]
    return [
        (f"delivery `{v}`: e-mails/s >= {goal:.2f}x of the bare loop", f"{r:.2f}x", r >= goal)
        for v, r in part["ratios"].items()
    ]
