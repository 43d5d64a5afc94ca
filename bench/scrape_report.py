"""The scrape part's Markdown section and goal rows, from its JSON result alone (``python -m
bench --render`` rebuilds them from ``bench/results/*.json``)."""

from __future__ import annotations

from typing import Any

from bench.common import fmt

GOAL_MS = 50.0  # a scrape's p99 at 4 workers (issue 18)
GOAL_PROCESSES = 4


def markdown(part: dict[str, Any]) -> str:
    cfg = part["config"]
    out = [
        "## Scrape: GET /metrics as processes multiply (issue 18)",
        "",
        f"Each target started afresh, {cfg['requests']} tasks put through it, then "
        f"{cfg['scrapes']} sequential scrapes (Prometheus's `Accept`, a connection each). "
        "CPU = the server's process tree per scrape, its idle CPU taken off. *files*: `.db` "
        "files in the multiprocess directory after the scrapes (*dead*: pids no longer running); "
        "*merge*/*encode*: the same directory merged and encoded again in the harness "
        "(median of 5), i.e. the scrape's own work without HTTP. *other load*: CPU cores the rest "
        "of the machine kept busy during the scrapes (should be ~0). API `--workers 1` is one "
        "process in single-process mode (no files). Restarts: worker processes SIGKILLed, "
        "replaced by uvicorn's supervisor / the prefork pool, a few tasks each, until "
        f"{cfg['restarts']} dead processes' files are there.",
        "",
        "| target | state | files | dead | series | bytes | p50 ms | p99 ms | CPU ms/scrape "
        "| merge ms | encode ms | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in part["rows"]:
        b = r["breakdown"] or {}
        out.append(
            f"| {r['name']} | {r['state']} | {r['db_files']} | {r['dead_pids']} | "
            f"{r['series']} | {r['bytes']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['cpu_ms_per_scrape']:.2f} | {fmt(b.get('merge_ms'), '.2f')} | "
            f"{fmt(b.get('encode_ms'), '.2f')} | {r.get('other_load_cores', 0):.2f} |"
        )
    restarts = [r for r in part["rows"] if r["restarted"]]
    if restarts:
        out.append("")
    for r in restarts:
        out.append(
            f"- {r['name']}: {r['restarted']['kills']} workers killed and replaced in "
            f"{r['restarted']['seconds']:.0f} s"
        )
    return "\n".join(out) + "\n"


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """One row per target: the worst p99 at 4 processes (fresh and after the restarts)."""
    result: list[tuple[str, str, bool | None]] = []
    for kind, label in (("api", "API `uvicorn --workers 4`"), ("celery", "Celery `-c 4`")):
        rows = [r for r in part["rows"] if r["target"] == kind and r["processes"] == GOAL_PROCESSES]
        if not rows:
            result.append((f"scrape p99 < {GOAL_MS:.0f} ms at 4 workers: {label}", "-", None))
            continue
        measured = ", ".join(f"{r['p99_ms']:.1f} ms ({r['state']})" for r in rows)
        worst = max(r["p99_ms"] for r in rows)
        result.append(
            (f"scrape p99 < {GOAL_MS:.0f} ms at 4 workers: {label}", measured, worst < GOAL_MS)
        )
    return result
