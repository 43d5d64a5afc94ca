"""The delivery part's Markdown section and goal rows, from its JSON result alone (``python -m
bench --render`` rebuilds the report with these)."""

from __future__ import annotations

from typing import Any

from bench.common import fmt

LABEL = {
    "bare": "bare loop",
    "bare-compat32": "bare loop, compat32 build",
    "inprocess": "ours in-process",
    "bare-celery": "bare Celery, project settings",
    "celery": "ours on Celery",
}
# the service's variants (the goal applies to them) and the equal-footing baseline of each
PAIRS = {"inprocess": "bare-compat32", "celery": "bare-celery"}
STEP = {
    "bare-compat32": "the service's message build (compat32 MIMEText, sendmail)",
    "inprocess": "the service in-process (HTTP, runner, instrumentation)",
    "bare-celery": "Celery with the project's settings (prefork, one message per task)",
    "celery": "our worker on Celery (envelope, runner, instrumentation, ledger)",
}


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
            f"timed send or request .. arrival of the last at the sink; Celery: from the "
            f"arrival of e-mail {cfg['warmup']}, start-up left out). CPU = the sender's "
            f"process tree (the server with its span export helper; the worker with its pool) "
            f"over that span, per e-mail. p99 = `histogram_quantile(0.99)` of the service's "
            f'`notification_delivery_duration_seconds{{channel="smtp"}}` over the timed '
            f"e-mails; the bare loops' and bare Celery's own timings in the same buckets (exact "
            f"p99 in brackets). In-process load: `{cfg['loadgen']}`, {cfg['http_concurrency']} "
            f"connections. Median of {cfg['rounds']} round(s), order alternating; ratios: "
            f"median of per-round ratios.",
            "",
            "Message building differs: the bare loop (and bare Celery) builds each message with "
            "`EmailMessage` (the modern API, `send_message`); the service builds it with the "
            "compat32 `MIMEText` for ASCII headers (`EmailMessage` only otherwise) and sends the "
            "bytes with `sendmail`, which is cheaper: the in-process ratio to the bare loop "
            "includes that difference. `bare-compat32` is the same loop building its messages "
            "as the service does, to read the overhead against an equal-cost build.",
            "",
            *(f"- `{v}`: {about}" for v, about in cfg["about"].items()),
            "",
            results_table(part),
            gap_table(part),
            rounds_table(part),
        ]
    )


def results_table(part: dict[str, Any]) -> str:
    """One row per variant: medians, ratio to the bare loop and to its equal-footing baseline,
    goal (the service's variants only)."""
    goal = part["config"]["goal"]
    vs = part.get("ratios_vs", {})
    out = [
        "| variant | msgs/s | vs bare | vs equal-footing bare | goal | p99 ms | CPU µs/msg | "
        "sink µs/msg | client µs/msg | spans/msg |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v, m in part["medians"].items():
        ratio = part["ratios"].get(v)
        verdict = "-"
        if ratio is not None and v in PAIRS:
            verdict = f">= {goal:.2f}x: {'met' if ratio >= goal else '**not met**'}"
        base = PAIRS.get(v, "")
        equal = vs.get(base, {}).get(v)
        equal_cell = "-" if equal is None else f"{equal:.2f} (vs `{base}`)"
        p99 = fmt(m["p99_ms"], ".1f")
        if m.get("p99_exact_ms") is not None:
            p99 += f" ({m['p99_exact_ms']:.1f})"
        out.append(
            f"| {LABEL.get(v, v)} | {fmt(m['msgs_per_s'], '.0f')} | "
            f"{'1.00' if v == 'bare' else fmt(ratio, '.2f')} | {equal_cell} | {verdict} | "
            f"{p99} | {fmt(m['cpu_us_per_msg'], '.0f')} | "
            f"{fmt(m['sink_cpu_us_per_msg'], '.0f')} | "
            f"{fmt(m.get('client_cpu_us_per_msg'), '.0f')} | {fmt(m.get('spans_per_msg'), '.2f')} |"
        )
    return "\n".join(out) + "\n"


def gap_table(part: dict[str, Any]) -> str:
    """Where each gap to the bare loop goes: bare loop -> equal-footing baseline -> ours, the
    msgs/s ratio of each step (median of per-round ratios) and the CPU µs/msg it adds."""
    medians, vs = part["medians"], part.get("ratios_vs", {})
    out = [
        "| step | msgs/s ratio of the step | CPU µs/msg | CPU µs/msg added | share of the added |",
        "|---|---:|---:|---:|---:|",
    ]
    for ours, base in PAIRS.items():
        if ours not in medians or base not in medians or "bare" not in medians:
            continue
        cpu = {v: medians[v]["cpu_us_per_msg"] for v in ("bare", base, ours)}
        total = cpu[ours] - cpu["bare"]
        # shares only when both steps add (of opposite signs they mean nothing)
        shares = total > 0 and cpu[base] >= cpu["bare"] and cpu[ours] >= cpu[base]
        out.append(f"| **{LABEL['bare']}** (to {LABEL[ours]}) | 1.00 | {cpu['bare']:.0f} | | |")
        for v, prev, ratio in (
            (base, "bare", part["ratios"][base]),
            (ours, base, vs[base][ours]),
        ):
            added = cpu[v] - cpu[prev]
            share = f"{added / total:.0%}" if shares else "-"
            out.append(
                f"| + {STEP[v]}: `{v}` | {ratio:.2f} | {cpu[v]:.0f} | {added:+.0f} | {share} |"
            )
        out.append(
            f"| = {LABEL[ours]} vs {LABEL['bare']} | {part['ratios'][ours]:.2f} | | "
            f"{total:+.0f} | {'100%' if shares else '-'} |"
        )
    if len(out) == 2:
        return ""
    return "\n".join(out) + "\n" + build_note(medians)


def build_note(medians: dict[str, Any]) -> str:
    """Bare Celery builds its messages like the bare loop (``EmailMessage``), the service's worker
    like ``bare-compat32``: the Celery step of ours includes that saving."""
    if not {"bare", "bare-compat32", "bare-celery", "celery"} <= set(medians):
        return ""
    saved = medians["bare"]["cpu_us_per_msg"] - medians["bare-compat32"]["cpu_us_per_msg"]
    ours = medians["celery"]["cpu_us_per_msg"] - medians["bare-celery"]["cpu_us_per_msg"]
    return (
        f"\n`bare-celery` builds each message as the bare loop does (`EmailMessage`), the "
        f"service's worker as `bare-compat32` does, which the loops show to save {saved:.0f} CPU "
        f"µs/msg: on an equal build, our worker would add about {ours + saved:.0f} CPU µs/msg "
        f"to bare Celery ({ours:+.0f} measured + {saved:.0f}), an estimate (one process per "
        f"message there, eight threads under one GIL in the loops).\n"
    )


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
    """The goal (>= 0.80x of the bare loop) for the service's variants; informational rows
    (no goal: verdict ``-``) for each against its equal-footing baseline."""
    goal = part["config"]["goal"]
    rows: list[tuple[str, str, bool | None]] = [
        (f"delivery `{v}`: e-mails/s >= {goal:.2f}x of the bare loop", f"{r:.2f}x", r >= goal)
        for v, r in part["ratios"].items()
        if v in PAIRS
    ]
    vs = part.get("ratios_vs", {})
    if (r := vs.get("bare-celery", {}).get("celery")) is not None:
        rows.append(
            (
                "delivery `celery`: ours on Celery vs bare Celery with the same settings "
                "(informational, no goal)",
                f"{r:.2f}x",
                None,
            )
        )
    if (r := vs.get("bare-compat32", {}).get("inprocess")) is not None:
        rows.append(
            (
                "delivery `inprocess`: ours in-process vs the bare loop building messages as "
                "the service does (informational, no goal)",
                f"{r:.2f}x",
                None,
            )
        )
    return rows
