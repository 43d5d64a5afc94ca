"""The Celery part's Markdown section and goal rows, from its JSON result alone.

``python -m bench --render`` rebuilds the report from ``bench/results/*.json`` with these, so they
read nothing but the part's result (and the worker catalogue, for the descriptions).
"""

from __future__ import annotations

from typing import Any

from bench.celery_workers import BASELINE, WORKERS


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
