"""The throughput part's summary of its runs: medians over rounds, and ratios to the baseline.

Every round starts every app afresh, so the rounds are independent samples: per app and
scenario the summary takes the median over rounds of each metric. The ratios pair each run with
the baseline's (``tutorial``) run of the *same round* and take the median of the per-round
ratios, so that a round on a noisier machine weighs on both sides of its ratio.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.apps import BASELINE
from bench.scenarios import ScenarioResult

METRICS = (
    "ok_per_s",
    "responses_per_s",
    "p50_ms",
    "p99_ms",
    "tasks_per_s",
    "drain_lag_s",
    "server_cpu_us_per_request",
    "helper_cpu_us_per_request",
    "sink_cpu_us_per_request",
    "other_load_cores",
    "stdout_bytes_per_request",
)
RATIO_METRICS = ("ok_per_s", "tasks_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(
    runs: list[ScenarioResult], servers: list[dict[str, Any]], apps: list[str], scenarios: list[str]
) -> dict[str, Any]:
    """Medians and ratios, per app and per scenario (in the order of ``scenarios``)."""
    return {
        "medians": medians(runs, servers, apps, scenarios),
        "ratios_vs_tutorial": ratios(runs, apps, scenarios),
    }


def medians(
    runs: list[ScenarioResult], servers: list[dict[str, Any]], apps: list[str], scenarios: list[str]
) -> dict[str, Any]:
    """Per app: its servers' peak RSS and spans/request, and per scenario the medians."""
    result: dict[str, Any] = {}
    for app in apps:
        mine_servers = [s for s in servers if s["app"] == app]
        entry: dict[str, Any] = {
            "peak_rss_mb": (median_of([s["peak_rss_kb"] for s in mine_servers]) or 0) / 1024,
            "spans_per_request": median_of(
                [s["otlp_sink"].get("spans_per_request") for s in mine_servers]
            ),
        }
        for scenario in scenarios:
            mine = [r for r in runs if r.app == app and r.scenario == scenario]
            if not mine:
                continue
            per: dict[str, Any] = {m: median_of([getattr(r, m) for r in mine]) for m in METRICS}
            per["rejected"] = sum(r.rejected for r in mine)
            per["errors"] = sum(r.errors for r in mine)
            per["lost"] = sum(r.lost for r in mine)
            per["requests"] = sum(r.requests for r in mine)
            entry[scenario] = per
        result[app] = entry
    return result


def ratios(runs: list[ScenarioResult], apps: list[str], scenarios: list[str]) -> dict[str, Any]:
    """Per app but the baseline and scenario: app / baseline of the same round, median."""
    result: dict[str, Any] = {}
    base = {(r.scenario, r.round): r for r in runs if r.app == BASELINE}
    for app in apps:
        if app == BASELINE:
            continue
        result[app] = {}
        for scenario in scenarios:
            pairs = [
                (r, base[(scenario, r.round)])
                for r in runs
                if r.app == app and r.scenario == scenario and (scenario, r.round) in base
            ]
            if not pairs:
                continue
            result[app][scenario] = {
                m: median_of([getattr(a, m) / getattr(b, m) for a, b in pairs if getattr(b, m)])
                for m in RATIO_METRICS
            } | {"pairs": len(pairs)}
    return result
