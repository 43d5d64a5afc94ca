"""The throughput part's report: its Markdown section and its rows of the goals table.

The goals are issue 5's: the service's 2xx req/s at least a given share of the tutorial app's,
and its p99 latency at most ``P99_GOAL`` times the tutorial's at saturation; and issue 18's, at
each paced rate (ordinary load): p99 at most ``P99_GOAL``, p50 at most ``P50_PACED_GOAL`` and
CPU per request at most ``CPU_PACED_GOAL`` times the tutorial's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench.apps import APPS
from bench.common import fmt
from bench.scenarios import PACED, PRIMARY

# goals of issue 5 (2xx req/s ratio vs tutorial); p99 ratio goal for all of ours
GOALS = {"ours-sampled-10": 0.90, "ours-sampled-100": 0.75}
P99_GOAL = 1.3
# issue 18, at each paced rate, for the same apps as GOALS (10% and 100% sampling)
P50_PACED_GOAL = 1.2
CPU_PACED_GOAL = 1.1


def is_paced(scenario: str) -> bool:
    """A paced scenario (``send-notification-paced-400``; ``send-notification-paced`` in the
    results of older runs)."""
    return scenario.startswith(PACED)


def _goal(app: str, scenario: str, ratio: float | None) -> str:
    goal = GOALS.get(app)
    if goal is None or ratio is None or scenario != PRIMARY:
        return "-"
    return f">= {goal:.2f}: {'met' if ratio >= goal else 'not met'}"


def _p99_goal(app: str, scenario: str, ratio: float | None) -> str:
    if (
        not app.startswith("ours")
        or ratio is None
        or not (scenario == PRIMARY or is_paced(scenario))
    ):
        return "-"
    return f"<= {P99_GOAL}: {'met' if ratio <= P99_GOAL else 'not met'}"


def _by_scenario(
    table: dict[str, Any],
) -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(app, the app's entry, scenario, the scenario's entry) of a summary table, scenarios in
    the run's order (an app's entry also holds values that are not scenarios)."""
    for app, per_app in table.items():
        for scenario, entry in per_app.items():
            if isinstance(entry, dict):
                yield app, per_app, scenario, entry


def markdown(part: dict[str, Any]) -> str:
    medians = part["summary"]["medians"]
    sections = [
        setup_section(part["config"], medians),
        paced_table(medians, part["summary"]["ratios_vs_tutorial"]),
        medians_table(medians),
        ratios_table(part["summary"]["ratios_vs_tutorial"]),
        rss_table(medians),
        lost_note(part["runs"]),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def setup_section(cfg: dict[str, Any], apps: dict[str, Any]) -> list[str]:
    """Heading, load, scenarios and the apps measured."""
    return [
        "## Throughput: the service vs the bare tutorial app",
        "",
        f"Load: `{cfg['loadgen']}`"
        + (" (1 thread)" if cfg["loadgen"] == "wrk" else "")
        + f", {cfg['concurrency']} connections, {cfg['requests']} requests per app, scenario "
        f"and round after {cfg['warmup']} warm-up requests; {cfg['rounds']} rounds, each app "
        "started afresh per round, order alternating. uvicorn: one process, "
        f"`{' '.join(cfg['uvicorn_options'])}`. Service settings: defaults "
        "(`NOTIFY_TASK_CONCURRENCY=8`, `NOTIFY_TASK_BACKLOG=10000`).",
        "",
        "Scenarios: `send-notification` (`POST /send-notification/user@example.com`, one task "
        "a request; the main row) and `advanced-notification` (`POST "
        "/advanced-notification/user@example.com?q=x`, two tasks) as fast as each app answers "
        "(closed loop: each app at its own saturation); `send-notification-paced-<rate>`: "
        f"{_paced_load(cfg)} offered to every app (each connection waits a jittered "
        "connections/rate before each request), so its latencies and CPU compare apps at the "
        "same, ordinary load.",
        "",
        *(f"- `{app}`: {APPS[app].about}" for app in apps),
    ]


def _paced_load(cfg: dict[str, Any]) -> str:
    """The paced load of a run's config (older runs: one rate, a number of requests)."""
    if "paced_rates" in cfg:
        rates = ", ".join(f"{r:g}" for r in cfg["paced_rates"])
        return f"{cfg['paced_seconds']:g} s of load at about {rates} req/s (one scenario each)"
    return f"{cfg.get('paced_requests')} requests at about {cfg.get('paced_rate')} req/s"


def paced_table(medians: dict[str, Any], ratios: dict[str, Any]) -> list[str]:
    """Latency and CPU at ordinary load: per paced rate and app, medians and ratios to the
    tutorial's (issue 18's goals)."""
    rows = [
        (scenario, app, e, ratios.get(app, {}).get(scenario, {}))
        for app, _, scenario, e in _by_scenario(medians)
        if is_paced(scenario)
    ]
    if not rows:
        return []
    out = [
        "Latency and CPU at ordinary load (paced scenarios; goals, `ours-*`: p50 <= "
        f"{P50_PACED_GOAL}x, p99 <= {P99_GOAL}x, CPU/req <= {CPU_PACED_GOAL}x the tutorial's). "
        "**CPU µs/req** counts the server and its span export helper, **helper** the helper's "
        "share; ratios: median of per-round ratios to `tutorial`.",
        "",
        "| scenario | app | 2xx/s | p50 ms | p99 ms | CPU µs/req | helper µs/req | p50 x | p99 x "
        "| CPU x | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = list(dict.fromkeys(row[0] for row in rows))
    for scenario, app, e, x in sorted(rows, key=lambda row: order.index(row[0])):
        out.append(
            f"| {scenario} | {app} | {fmt(e['ok_per_s'], '.0f')} | {fmt(e['p50_ms'], '.2f')} | "
            f"{fmt(e['p99_ms'], '.2f')} | {fmt(e['server_cpu_us_per_request'], '.0f')} | "
            f"{fmt(e.get('helper_cpu_us_per_request'), '.0f')} | {fmt(x.get('p50_ms'), '.2f')} | "
            f"{fmt(x.get('p99_ms'), '.2f')} | {fmt(x.get('server_cpu_us_per_request'), '.2f')} | "
            f"{fmt(e['other_load_cores'], '.2f')} |"
        )
    return out


def medians_table(medians: dict[str, Any]) -> list[str]:
    """Per app and scenario, the medians over rounds."""
    out = [
        "Columns: **2xx/s** = accepted (2xx) responses per second of the load; **rejected** = "
        "non-2xx responses (503: backlog full), summed over rounds; **tasks/s** = accepted tasks "
        "/ (first request .. last task line in `log.txt`), work actually done; **lag** = last "
        "response .. last task line; **CPU µs/req** = server process user+system CPU (its span "
        "export helper's included) over load and drain / requests; **sink** = the OTLP "
        "receiver's CPU µs/req; **spans/req** = spans the receiver got per request; **other "
        "load** = CPU cores the rest of the machine was busy (noise: should be ~0). Medians over "
        "rounds.",
        "",
        "| app | scenario | 2xx/s | rejected | p50 ms | p99 ms | tasks/s | lag s | CPU µs/req | "
        "sink µs/req | spans/req | log B/req | lost | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for app, per_app, scenario, e in _by_scenario(medians):
        spec = APPS[app]
        out.append(
            f"| {app} | {scenario} | {fmt(e['ok_per_s'], '.0f')} | {e['rejected']} | "
            f"{fmt(e['p50_ms'], '.2f')} | {fmt(e['p99_ms'], '.2f')} | "
            f"{fmt(e['tasks_per_s'], '.0f')} | {fmt(e['drain_lag_s'], '.2f')} | "
            f"{fmt(e['server_cpu_us_per_request'], '.0f')} | "
            f"{fmt(e['sink_cpu_us_per_request'], '.0f') if spec.otlp else '-'} | "
            f"{fmt(per_app['spans_per_request'], '.2f') if spec.otlp else '-'} | "
            f"{fmt(e['stdout_bytes_per_request'], '.0f') if spec.factory else '-'} | "
            f"{e['lost']} | {fmt(e['other_load_cores'], '.2f')} |"
        )
    return out


def ratios_table(ratios: dict[str, Any]) -> list[str]:
    """Per app and scenario, the ratios to the baseline, with the goals."""
    out = [
        "Ratios to `tutorial`, median over rounds of the per-round pair (app / tutorial of the "
        "same round). **req/s** = 2xx/s ratio (the issue's throughput goal, on "
        f"`{PRIMARY}`); **goodput** = tasks/s ratio; latency and CPU: lower is better.",
        "",
        "| app | scenario | req/s (2xx) | goal | goodput (tasks/s) | p50 | p99 | p99 goal | "
        "CPU/req | pairs |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for app, _, scenario, x in _by_scenario(ratios):
        out.append(
            f"| {app} | {scenario} | {fmt(x['ok_per_s'], '.2f')} | "
            f"{_goal(app, scenario, x['ok_per_s'])} | {fmt(x['tasks_per_s'], '.2f')} | "
            f"{fmt(x['p50_ms'], '.2f')} | {fmt(x['p99_ms'], '.2f')} | "
            f"{_p99_goal(app, scenario, x['p99_ms'])} | "
            f"{fmt(x['server_cpu_us_per_request'], '.2f')} | {x['pairs']} |"
        )
    return out


def rss_table(medians: dict[str, Any]) -> list[str]:
    return [
        "| app | peak RSS (VmHWM) MB |",
        "|---|---:|",
        *(f"| {app} | {per_app['peak_rss_mb']:.1f} |" for app, per_app in medians.items()),
    ]


def lost_note(runs: list[dict[str, Any]]) -> list[str]:
    lost = [r for r in runs if r["lost"]]
    if not lost:
        return []
    return [f"**{len(lost)} run(s) lost task lines** (see `runs` in the JSON)."]


def goals(part: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows for the summary table."""
    rows: list[tuple[str, str, bool | None]] = []
    ratios = part["summary"]["ratios_vs_tutorial"]
    for app, goal in GOALS.items():
        x = ratios.get(app, {}).get(PRIMARY)
        if x is None:
            continue
        r, p99 = x["ok_per_s"], x["p99_ms"]
        rows.append(
            (
                f"`{app}`: 2xx req/s >= {goal:.2f} of `tutorial` (`{PRIMARY}`)",
                f"{fmt(r, '.2f')} (goodput {fmt(x['tasks_per_s'], '.2f')})",
                None if r is None else r >= goal,
            )
        )
        rows.append(
            (
                f"`{app}`: p99 <= {P99_GOAL}x `tutorial`'s (`{PRIMARY}`, each at its own "
                "saturation)",
                fmt(p99, ".2f"),
                None if p99 is None else p99 <= P99_GOAL,
            )
        )
    for app in GOALS:
        rows += paced_goals(app, ratios.get(app, {}))
    return rows


def paced_goals(app: str, ratios: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 18's goal rows of one app: p99, p50 and CPU/request ratios at each paced rate."""
    rows: list[tuple[str, str, bool | None]] = []
    limits = (
        ("p99", "p99_ms", P99_GOAL),
        ("p50", "p50_ms", P50_PACED_GOAL),
        ("CPU µs/req", "server_cpu_us_per_request", CPU_PACED_GOAL),
    )
    for scenario, x in ratios.items():
        if not is_paced(scenario):
            continue
        for label, key, limit in limits:
            value = x.get(key)
            rows.append(
                (
                    f"`{app}`: {label} <= {limit}x `tutorial`'s at the same load (`{scenario}`)",
                    fmt(value, ".2f"),
                    None if value is None else value <= limit,
                )
            )
    return rows
