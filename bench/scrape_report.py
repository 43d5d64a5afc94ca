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
        "(median of 5), i.e. the scrape's own work without HTTP; *library's*: the same two steps "
        "by prometheus-client's `MultiProcessCollector.merge` and OpenMetrics encoder (what a "
        "scrape did before issue 18); *control*: as many requests of a path that does next to "
        "nothing on the same server right after the scrapes (`/healthz`; the Celery worker's "
        "metrics server: `/favicon.ico`), the HTTP floor under the machine's load of the moment. "
        "*other load*: CPU cores the rest "
        "of the machine kept busy during the scrapes (should be ~0). API `--workers 1` is one "
        "process in single-process mode (no files). Restarts: worker processes SIGKILLed, "
        "replaced by uvicorn's supervisor / the prefork pool, a few tasks each, until "
        f"{cfg['restarts']} dead processes' files are there.",
        "",
        "| target | state | files | dead | series | bytes | p50 ms | p99 ms | control p50/p99 "
        "| CPU ms/scrape | merge ms | encode ms | library's ms | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in part["rows"]:
        b = r["breakdown"] or {}
        library = _library_ms(b)
        out.append(
            f"| {r['name']} | {r['state']} | {r['db_files']} | {r['dead_pids']} | "
            f"{r['series']} | {r['bytes']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{_control(r)} | {r['cpu_ms_per_scrape']:.2f} | {fmt(b.get('merge_ms'), '.2f')} | "
            f"{fmt(b.get('encode_ms'), '.2f')} | {fmt(library, '.2f')} | "
            f"{r.get('other_load_cores', 0):.2f} |"
        )
    out += ["", "How a scrape's cost grows:", "", *growth(part["rows"])]
    restarts = [r for r in part["rows"] if r["restarted"]]
    if restarts:
        out.append("")
    for r in restarts:
        out.append(
            f"- {r['name']}: {r['restarted']['kills']} workers killed and replaced in "
            f"{r['restarted']['seconds']:.0f} s"
        )
    return "\n".join(out) + "\n"


def _control(r: dict[str, Any]) -> str:
    if "control_p50_ms" not in r:
        return "-"  # a result from before the control requests
    return f"{r['control_p50_ms']:.2f} / {r['control_p99_ms']:.2f}"


def _library_ms(b: dict[str, float]) -> float | None:
    if "library_merge_ms" not in b:
        return None  # a result from before the library's steps were timed
    return b["library_merge_ms"] + b["library_encode_ms"]


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x, or None (fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    num = sum((x - mx) * (y - my) for x, y in points)
    return num / sum((x - mx) ** 2 for x, _ in points)


def _defaults(row: dict[str, Any]) -> bool:
    """Whether the row ran with the service's defaults (not a ``--scrape-gc-freeze`` contrast)."""
    return bool(row.get("gc_freeze", True))


def growth(rows: list[dict[str, Any]]) -> list[str]:
    """Per extra API process (fresh rows, multiprocess mode), per ``.db`` file (the harness's
    merge over every multiprocess row) and per dead process (after the restarts vs fresh)."""
    out = []
    fresh = {
        r["processes"]: r
        for r in rows
        if r["target"] == "api" and r["state"] == "fresh" and _defaults(r)
    }
    multi = sorted(n for n in fresh if n > 1)
    if len(multi) >= 2:
        lo, hi = fresh[multi[0]], fresh[multi[-1]]
        span = hi["processes"] - lo["processes"]
        cpu = (hi["cpu_ms_per_scrape"] - lo["cpu_ms_per_scrape"]) / span
        p50 = (hi["p50_ms"] - lo["p50_ms"]) / span
        out.append(
            f"- per extra API process ({lo['processes']} -> {hi['processes']} workers): "
            f"CPU {cpu:+.2f} ms/scrape, p50 {p50:+.2f} ms"
        )
    if 1 in fresh and multi:
        first = fresh[multi[0]]
        out.append(
            f"- one process (single-process mode) -> {first['processes']} (files): CPU "
            f"{fresh[1]['cpu_ms_per_scrape']:.2f} -> {first['cpu_ms_per_scrape']:.2f} ms/scrape"
        )
    with_files = [r for r in rows if r["breakdown"]]
    ours = _slope([(r["db_files"], r["breakdown"]["merge_ms"]) for r in with_files])
    library = _slope(
        [(r["db_files"], r["breakdown"]["library_merge_ms"]) for r in with_files
         if "library_merge_ms" in r["breakdown"]]
    )  # fmt: skip
    if ours is not None:
        before = "" if library is None else f" (prometheus-client's merge: {library * 1e3:+.0f} µs)"
        out.append(
            f"- per `.db` file: merge {ours * 1e3:+.0f} µs{before}, least squares over "
            f"{len(with_files)} rows in the harness"
        )
    for r in rows:
        if not r["restarted"]:
            continue
        base = next(f for f in rows if f["name"] == r["name"] and f["state"] == "fresh")
        delta = r["cpu_ms_per_scrape"] - base["cpu_ms_per_scrape"]
        out.append(
            f"- per dead process, {r['name']}: CPU {delta / r['restarted']['kills'] * 1e3:+.1f} "
            f"µs/scrape ({r['restarted']['kills']} killed, {r['db_files'] - base['db_files']:+d} "
            "files: compacted into archives)"
        )
    return out or ["- (not enough rows)"]


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """One row per target: the worst p99 at 4 processes (fresh and after the restarts)."""
    result: list[tuple[str, str, bool | None]] = []
    for kind, label in (("api", "API `uvicorn --workers 4`"), ("celery", "Celery `-c 4`")):
        rows = [
            r
            for r in part["rows"]
            if r["target"] == kind and r["processes"] == GOAL_PROCESSES and _defaults(r)
        ]
        if not rows:
            result.append((f"scrape p99 < {GOAL_MS:.0f} ms at 4 workers: {label}", "-", None))
            continue
        measured = ", ".join(f"{r['p99_ms']:.1f} ms ({r['state']})" for r in rows)
        worst = max(r["p99_ms"] for r in rows)
        result.append(
            (f"scrape p99 < {GOAL_MS:.0f} ms at 4 workers: {label}", measured, worst < GOAL_MS)
        )
    return result
