"""The Celery part's Markdown section and goal rows, from its JSON result alone.

``python -m bench --render`` rebuilds the report from ``bench/results/*.json`` with these, so they
read nothing but the part's result (and the worker catalogue, for the descriptions).
"""

from __future__ import annotations

from typing import Any

from bench.celery_workers import BASELINE, OTEL_STACKS, PROJECT_BASELINE, WORKERS


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rounds(values: list[float] | None) -> str:
    return "-" if not values else " ".join(f"{v:.2f}" for v in values)


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    out = [
        "## Celery: instrumented worker vs bare worker",
        "",
        f"Own redis-server; {cfg['tasks']} messages published before each worker starts; "
        f"`--pool {cfg['pool']} -c {cfg['concurrency']}`; tasks/s = (tasks - "
        f"{cfg['skipped']}) / (line {cfg['skipped']} .. last line of `log.txt`), start-up "
        f"excluded; CPU = the worker's whole process tree (main, pool, their helpers) over the "
        f"same span; median of {cfg['rounds']} rounds, order alternating. Ratios: median of "
        "per-round pairs; the pairs themselves in the last columns.",
        "",
        *(f"- `{w}`: {WORKERS[w].description}" for w in cfg["workers"]),
        "",
        *worker_table(part),
        "",
        *otel_table(part),
    ]
    return "\n".join(out) + "\n"


def worker_table(part: dict[str, Any]) -> list[str]:
    """One row per worker: medians, ratios to both bare workers, the per-round pairs."""
    ratios, cpu = part["ratios"], part.get("cpu_ratios", {})
    pairs = part.get("round_ratios", {}).get(PROJECT_BASELINE, {})
    cpu_pairs = part.get("cpu_round_ratios", {}).get(PROJECT_BASELINE, {})
    out = [
        "| worker | tasks/s | CPU µs/task | vs bare | vs bare-project-conf | CPU vs "
        "bare-project-conf | spans/task | lines lost | per round: tasks/s vs "
        "bare-project-conf | per round: CPU vs bare-project-conf |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for w, m in part["medians"].items():
        spans = m["spans_per_task"]
        out.append(
            f"| {w} | {m['tasks_per_s']:.0f} | {m['cpu_us_per_task']:.0f} | "
            f"{_ratio(ratios.get(BASELINE, {}).get(w))} | "
            f"{_ratio(ratios.get(PROJECT_BASELINE, {}).get(w))} | "
            f"{_ratio(cpu.get(PROJECT_BASELINE, {}).get(w))} | "
            f"{'-' if spans is None else f'{spans:.2f}'} | {m['lines_lost']} | "
            f"{_rounds(pairs.get(w))} | {_rounds(cpu_pairs.get(w))} |"
        )
    return out


def otel_table(part: dict[str, Any]) -> list[str]:
    """Ours against the otel stack of the same sampling (tasks/s > 1 and CPU < 1: ours wins)."""
    ratios, cpu = part["ratios"], part.get("cpu_ratios", {})
    rows = [
        f"| {w} | {stack} | {r:.2f} | {_ratio(cpu.get(stack, {}).get(w))} | "
        f"{_rounds(part['round_ratios'][stack][w])} |"
        for stack in OTEL_STACKS
        for w, r in ratios.get(stack, {}).items()
    ]
    if not rows:
        return []
    return [
        "| ours | vs the otel stack | tasks/s ratio | CPU µs/task ratio | per round: tasks/s |",
        "|---|---|---:|---:|---|",
        *rows,
    ]


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 18, goal 2: ours vs ``bare-project-conf`` (tasks/s, CPU) and vs the otel stack."""
    cfg = part["config"]
    limits = cfg.get("goals", {})
    ratios, cpu = part["ratios"], part.get("cpu_ratios", {})
    rows: list[tuple[str, str, bool | None]] = []
    for w, limit in limits.items():
        r = ratios.get(PROJECT_BASELINE, {}).get(w)
        if w == "cpu" or r is None:
            continue
        rows.append(
            (f"Celery `{w}`: tasks/s >= {limit:.2f}x `bare-project-conf`", _ratio(r), r >= limit)
        )
        c = cpu.get(PROJECT_BASELINE, {}).get(w)
        if c is not None:
            rows.append(
                (
                    f"Celery `{w}`: CPU µs/task <= {limits['cpu']:.2f}x `bare-project-conf`",
                    _ratio(c),
                    c <= limits["cpu"],
                )
            )
    for stack in OTEL_STACKS:
        for w, r in ratios.get(stack, {}).items():
            if WORKERS[w].events:  # ours with -E: a user option, compared in the table only
                continue
            c = cpu.get(stack, {}).get(w)
            rows.append(
                (
                    f"Celery `{w}` beats `{stack}` (tasks/s ratio > 1, CPU ratio < 1)",
                    f"tasks/s {r:.2f}, CPU {_ratio(c)}",
                    r > 1 and c is not None and c < 1,
                )
            )
    return rows
