"""Grafana dashboards as code, built with grafana-foundation-sdk.

Run ``python grafana/dashboards.py`` to (re)write ``grafana/dashboards/*.json``; the JSON files are
committed and tests/stack/test_dashboards.py fails when they differ from what this script makes.
``build_dashboards()`` returns the same dashboards as plain dicts, keyed by file name.

Queries use the recording rules of prometheus/rules/recording.yml where one exists. Panels
with exemplars query the raw histogram instead: exemplars are stored on the scraped series only,
never on recorded ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, logs, loki, stat, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

OUT_DIR = Path(__file__).resolve().parent / "dashboards"

# Datasource uids provisioned by grafana/provisioning/datasources/datasources.yml.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = DataSourceRef(type_val="loki", uid="loki")

BACKGROUND_TASKS_UID = "background-tasks"
HTTP_SERVICE_UID = "http-service"

# Label selectors shared by the background task panels.
SEL_INSTANCE = 'instance=~"$instance"'
SEL_BACKEND = f'{SEL_INSTANCE}, backend=~"$backend"'
SEL_TASK = f'{SEL_BACKEND}, task=~"$task"'
SEL_ROUTE = 'instance=~"$instance", route=~"$route"'

ENQUEUED_RATE = "instance_task_backend:background_task_enqueued:rate5m"
STARTED_RATE = "instance_task_backend:background_task_started:rate5m"
FINISHED_RATE = "instance_task_backend_outcome:background_task_finished:rate5m"
FINAL_OUTCOMES = 'outcome=~"success|failure|timeout"'


# --- small helpers --------------------------------------------------------------------------


def _target(
    expr: str, legend: str = "", ref: str = "A", *, exemplar: bool = False, instant: bool = False
) -> prom.Dataquery:
    query = (
        prom.Dataquery()
        .expr(expr)
        .ref_id(ref)
        .datasource(PROMETHEUS)
        .legend_format(legend or "__auto")
    )
    if exemplar:
        query = query.exemplar(True)
    return query.instant() if instant else query.range()


def _refs(
    targets: list[tuple[str, str]], *, exemplar_on: int | None = None
) -> list[Builder[Dataquery]]:
    return [
        _target(expr, legend, chr(ord("A") + i), exemplar=(i == exemplar_on))
        for i, (expr, legend) in enumerate(targets)
    ]


def _legend() -> common_b.VizLegendOptions:
    return (
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
    )


def _thresholds(limit: float) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color="green"), Threshold(value=limit, color="red")])
    )


def _series(
    title: str,
    description: str,
    unit: str,
    targets: list[tuple[str, str]],
    *,
    exemplar_on: int | None = None,
    span: int = 12,
    limit: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(span)
        .height(8)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(_legend())
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
        .targets(_refs(targets, exemplar_on=exemplar_on))
    )
    if limit is not None:
        panel = panel.thresholds(_thresholds(limit)).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
    return panel


def _logs(title: str, expr: str) -> logs.Panel:
    return (
        logs.Panel()
        .title(title)
        .description(
            "JSON log lines from Loki. Type a trace id in the trace_id box to see one trace's "
            "lines (empty: all lines); each line's trace_id links to the trace in Tempo."
        )
        .datasource(LOKI)
        .span(24)
        .height(12)
        .show_time(True)
        .wrap_log_message(True)
        .prettify_log_message(False)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .with_target(loki.Dataquery().expr(expr).ref_id("A").datasource(LOKI).max_lines(500))
    )


def _datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
    )


def _query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _trace_id_variable() -> dash.TextBoxVariable:
    return (
        dash.TextBoxVariable("trace_id")
        .label("trace id")
        .description("Filter the logs panel by trace id (empty: all lines).")
        .default_value("")
    )


def _link(title: str, uid: str) -> dash.DashboardLink:
    return (
        dash.DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .include_vars(False)
        .keep_time(True)
    )


# --- dashboards -----------------------------------------------------------------------------


def background_tasks() -> dash.Dashboard:
    """Background tasks: traffic, outcomes, latency, backlog, Celery workers, logs."""
    d = (
        dash.Dashboard("Background tasks")
        .uid(BACKGROUND_TASKS_UID)
        .description(
            "Every background task run of the notification service (in-process and Celery): "
            "traffic, outcomes, duration, queue wait, backlog, workers and logs."
        )
        .tags(["notification-service", "background-tasks"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(1)  # type: ignore[arg-type]  # shared crosshair
        .link(_link("HTTP service", HTTP_SERVICE_UID))
        .with_variable(_datasource_variable())
        .with_variable(
            _query_variable(
                "instance",
                "instance",
                'label_values({__name__=~"background_task_capacity|background_task_queue_depth"}'
                ", instance)",
            )
        )
        .with_variable(
            _query_variable(
                "backend",
                "backend",
                'label_values({__name__=~"background_task_capacity|background_task_queue_depth",'
                f"{SEL_INSTANCE}}}, backend)",
            )
        )
        .with_variable(
            _query_variable(
                "task",
                "task",
                f"label_values(background_task_started_total{{{SEL_BACKEND}}}, task)",
            )
        )
        .with_variable(_trace_id_variable())
    )

    d = d.with_row(dash.Row("Traffic and outcomes"))
    d = d.with_panel(
        _series(
            "Traffic",
            "Tasks enqueued, started and finished per second (finished by outcome).",
            "ops",
            [
                (f"sum by (backend) ({ENQUEUED_RATE}{{{SEL_TASK}}})", "enqueued {{backend}}"),
                (f"sum by (backend) ({STARTED_RATE}{{{SEL_TASK}}})", "started {{backend}}"),
                (f"sum by (outcome) ({FINISHED_RATE}{{{SEL_TASK}}})", "finished {{outcome}}"),
            ],
        )
    )
    d = d.with_panel(
        _series(
            "Failure ratio",
            "Share of final outcomes that are failure or timeout, per task "
            "(objective: at most 5%).",
            "percentunit",
            [
                (
                    f'sum by (task) ({FINISHED_RATE}{{{SEL_TASK}, outcome=~"failure|timeout"}})'
                    f" / sum by (task) ({FINISHED_RATE}{{{SEL_TASK}, {FINAL_OUTCOMES}}})",
                    "{{task}}",
                )
            ],
            limit=0.05,
        )
    )
    d = d.with_panel(
        bargauge.Panel()
        .title("Top exception types")
        .description("Failed runs by exception class over the dashboard's time range.")
        .datasource(PROMETHEUS)
        .span(8)
        .height(8)
        .unit("short")
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .with_target(
            _target(
                "topk(10, sum by (exception, task) "
                f"(increase(background_task_failures_total{{{SEL_TASK}}}[$__range])))",
                "{{exception}} ({{task}})",
                instant=True,
            )
        )
    )
    d = d.with_panel(
        _series(
            "Timeouts",
            "Runs ending with outcome timeout per second, per task.",
            "ops",
            [(f'sum by (task) ({FINISHED_RATE}{{{SEL_TASK}, outcome="timeout"}})', "{{task}}")],
            span=8,
        )
    )
    d = d.with_panel(
        _series(
            "Dropped tasks",
            "Tasks dropped per second, by reason (each one a lost notification).",
            "ops",
            [
                (
                    "sum by (task, reason) "
                    f"(instance_task_backend_reason:background_task_dropped:rate5m{{{SEL_TASK}}})",
                    "{{task}} {{reason}}",
                )
            ],
            span=8,
        )
    )

    d = d.with_row(dash.Row("Latency"))
    duration = f"rate(background_task_duration_seconds_bucket{{{SEL_TASK}}}[$__rate_interval])"
    d = d.with_panel(
        _series(
            "Task duration by outcome",
            "p50, p95 and p99 run duration by outcome (every outcome, not only successes). "
            "Exemplars (dots) open the run's trace in Tempo.",
            "s",
            [
                (f"histogram_quantile(0.50, sum by (le, outcome) ({duration}))", "p50 {{outcome}}"),
                (f"histogram_quantile(0.95, sum by (le, outcome) ({duration}))", "p95 {{outcome}}"),
                (f"histogram_quantile(0.99, sum by (le, outcome) ({duration}))", "p99 {{outcome}}"),
            ],
            exemplar_on=2,
        )
    )
    wait = (
        f"instance_le_task_backend:background_task_queue_wait_seconds_bucket:rate5m{{{SEL_TASK}}}"
    )
    d = d.with_panel(
        _series(
            "Queue wait",
            "Time from enqueue to start, p95 and p99 per task (objective: p95 under 10s).",
            "s",
            [
                (f"histogram_quantile(0.95, sum by (le, task) ({wait}))", "p95 {{task}}"),
                (f"histogram_quantile(0.99, sum by (le, task) ({wait}))", "p99 {{task}}"),
            ],
            limit=10,
        )
    )

    d = d.with_row(dash.Row("Capacity and backlog"))
    d = d.with_panel(
        _series(
            "In progress vs capacity",
            "Runs in progress and the concurrency limit, per backend; utilisation is their ratio.",
            "short",
            [
                (
                    f"sum by (backend) (background_task_in_progress{{{SEL_TASK}}})",
                    "in progress {{backend}}",
                ),
                (
                    f"sum by (backend) (background_task_capacity{{{SEL_BACKEND}}})",
                    "capacity {{backend}}",
                ),
            ],
            span=8,
        )
    )
    d = d.with_panel(
        _series(
            "Utilisation",
            "Runs in progress divided by capacity, per backend.",
            "percentunit",
            [
                (
                    f"sum by (backend) (background_task_in_progress{{{SEL_BACKEND}}})"
                    f" / sum by (backend) (background_task_capacity{{{SEL_BACKEND}}})",
                    "{{backend}}",
                )
            ],
            span=8,
            limit=0.9,
        )
    )
    d = d.with_panel(
        stat.Panel()
        .title("Time since last success")
        .description("Per task, how long ago a run last succeeded (no value: never).")
        .datasource(PROMETHEUS)
        .span(8)
        .height(8)
        .unit("s")
        .with_target(
            _target(
                "time() - max by (task, backend) (background_task_last_finished_timestamp_seconds"
                f'{{{SEL_TASK}, outcome="success"}} > 0)',
                "{{task}} ({{backend}})",
            )
        )
    )
    depth = f"background_task_queue_depth{{{SEL_BACKEND}}}"
    oldest = f"background_task_oldest_pending_timestamp_seconds{{{SEL_BACKEND}}}"
    d = d.with_panel(
        _series(
            "Queue depth",
            "Tasks waiting to start, per instance and queue.",
            "short",
            [(depth, "{{instance}} {{backend}}/{{queue}}")],
        )
    )
    d = d.with_panel(
        _series(
            "Age of oldest pending task",
            "Seconds the oldest waiting task has waited (0: queue empty). Objective: under 5m.",
            "s",
            # The gauge is 0 for an empty queue: show age 0 then, not time() - 0.
            [
                (
                    f"(time() - ({oldest} > 0)) or ({oldest} * 0)",
                    "{{instance}} {{backend}}/{{queue}}",
                )
            ],
            limit=300,
        )
    )

    d = d.with_row(dash.Row("Celery workers"))
    d = d.with_panel(
        _series(
            "Workers up",
            "Scrape status of each Celery worker (1 up, 0 down).",
            "short",
            [('up{job="worker"}', "{{instance}}")],
            span=6,
        )
    )
    d = d.with_panel(
        _series(
            "In progress per worker",
            "Runs in progress on each Celery worker.",
            "short",
            [('sum by (instance) (background_task_in_progress{job="worker"})', "{{instance}}")],
            span=6,
        )
    )
    d = d.with_panel(
        _series(
            "Celery queue depth",
            "Messages waiting in each Celery queue.",
            "short",
            [('max by (queue) (background_task_queue_depth{backend="celery"})', "{{queue}}")],
            span=6,
        )
    )
    d = d.with_panel(
        _series(
            "Redeliveries",
            "Runs of messages delivered again because the worker process running them died "
            "before acknowledging (a steady stream: a task that kills its process).",
            "short",
            [
                (
                    "sum by (task) (increase(background_task_redelivered_total"
                    '{backend="celery"}[$__rate_interval]))',
                    "{{task}}",
                )
            ],
            span=6,
        )
    )

    d = d.with_row(dash.Row("Logs"))
    d = d.with_panel(
        _logs(
            "Task logs",
            '{service_name=~"notification-.*"} |= "$trace_id" | json | task=~"$task"',
        )
    )
    return d


def http_service() -> dash.Dashboard:
    """HTTP service: request rate, errors, latency, in-flight requests, logs."""
    d = (
        dash.Dashboard("HTTP service")
        .uid(HTTP_SERVICE_UID)
        .description("Requests served by the notification API.")
        .tags(["notification-service", "http"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(1)  # type: ignore[arg-type]
        .link(_link("Background tasks", BACKGROUND_TASKS_UID))
        .with_variable(_datasource_variable())
        .with_variable(
            _query_variable(
                "instance", "instance", "label_values(http_server_active_requests, instance)"
            )
        )
        .with_variable(
            _query_variable(
                "route",
                "route",
                "label_values(http_server_request_duration_seconds_count"
                f"{{{SEL_INSTANCE}}}, route)",
            )
        )
        .with_variable(_trace_id_variable())
    )
    requests = "instance_method_route_status_code:http_server_requests:rate5m"
    d = d.with_panel(
        _series(
            "Request rate",
            "Requests per second by route and status code.",
            "reqps",
            [
                (
                    f"sum by (route, status_code) ({requests}{{{SEL_ROUTE}}})",
                    "{{route}} {{status_code}}",
                )
            ],
        )
    )
    d = d.with_panel(
        _series(
            "5xx ratio",
            "Share of requests answered with a 5xx status (objective: at most 5%).",
            "percentunit",
            [
                (
                    f'(sum({requests}{{{SEL_ROUTE}, status_code=~"5.."}}) or vector(0))'
                    f" / sum({requests}{{{SEL_ROUTE}}})",
                    "5xx ratio",
                )
            ],
            limit=0.05,
        )
    )
    latency = f"rate(http_server_request_duration_seconds_bucket{{{SEL_ROUTE}}}[$__rate_interval])"
    d = d.with_panel(
        _series(
            "Latency by route",
            "p50, p95 and p99 request duration per route (until the response is sent; background "
            "work is not included). Exemplars open the request's trace.",
            "s",
            [
                (f"histogram_quantile(0.50, sum by (le, route) ({latency}))", "p50 {{route}}"),
                (f"histogram_quantile(0.95, sum by (le, route) ({latency}))", "p95 {{route}}"),
                (f"histogram_quantile(0.99, sum by (le, route) ({latency}))", "p99 {{route}}"),
            ],
            exemplar_on=2,
            span=24,
        )
    )
    d = d.with_panel(
        _series(
            "Active requests",
            "Requests being served right now, by method.",
            "short",
            [
                (
                    'sum by (method) (http_server_active_requests{instance=~"$instance"})',
                    "{{method}}",
                )
            ],
        )
    )
    slo = "job:http_server_request_latency_slo_errors"
    d = d.with_panel(
        _series(
            "Latency SLO: requests slower than 0.5s",
            "Share of user requests slower than 0.5s over 5m, 1h and 6h windows (budget: 1%).",
            "percentunit",
            [
                (f"{slo}:ratio_rate5m", "5m {{job}}"),
                (f"{slo}:ratio_rate1h", "1h {{job}}"),
                (f"{slo}:ratio_rate6h", "6h {{job}}"),
            ],
            limit=0.01,
        )
    )
    lag = 'rate(event_loop_lag_seconds_bucket{instance=~"$instance"}[$__rate_interval])'
    d = d.with_panel(
        _series(
            "Event-loop lag",
            "How late the API's event loop wakes up (p99 and max bucket): a task that blocks the "
            "loop shows here (alert EventLoopStalled).",
            "s",
            [
                (f"histogram_quantile(0.99, sum by (le, instance) ({lag}))", "p99 {{instance}}"),
                (f"histogram_quantile(1, sum by (le, instance) ({lag}))", "max {{instance}}"),
            ],
            limit=0.5,
        )
    )
    d = d.with_panel(
        _series(
            "Spans exported and lost",
            "Spans sent to the OTLP collector per second, and those lost: dropped (export queue "
            "full, shutdown) or refused by the collector (alert TracingSpansLost).",
            "short",
            [
                (
                    "sum by (outcome) (rate(tracing_spans_exported_total"
                    '{instance=~"$instance"}[$__rate_interval]))',
                    "exported {{outcome}}",
                ),
                (
                    "sum by (reason) (rate(tracing_spans_dropped_total"
                    '{instance=~"$instance"}[$__rate_interval]))',
                    "dropped {{reason}}",
                ),
            ],
        )
    )
    d = d.with_panel(
        _logs(
            "API logs",
            '{service_name="notification-api"} |= "$trace_id" | json',
        )
    )
    return d


# --- output ---------------------------------------------------------------------------------


def _number_panels(model: dict[str, Any]) -> dict[str, Any]:
    """Give every panel (rows included) a distinct id, in layout order."""
    next_id = 1
    for panel in model.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


def _to_dict(builder: dash.Dashboard) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return _number_panels(model)


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Return the dashboards as JSON-ready dicts, keyed by their file name."""
    return {
        "background-tasks.json": _to_dict(background_tasks()),
        "http-service.json": _to_dict(http_service()),
    }


def render_json(model: dict[str, Any]) -> str:
    """The exact text written to a dashboard file."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if a file differs from the generated one",
    )
    args = parser.parse_args(argv)
    stale = []
    for name, model in build_dashboards().items():
        path = args.out / name
        text = render_json(model)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(
            "out of date (run python grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
