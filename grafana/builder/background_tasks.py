"""The background-tasks dashboard: every task run, in-process and Celery, one function a row.

Rows, top to bottom: traffic and outcomes, latency, capacity and backlog, delivery, Celery
workers, logs.
Each row function returns the row's panels in layout order (left to right, then down).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common

from .common import (
    BACKGROUND_TASKS_UID,
    HTTP_SERVICE_UID,
    PROMETHEUS,
    SEL_INSTANCE,
    PanelBuilder,
    add_row,
    latency_quantiles,
    logs_panel,
    new_dashboard,
    quantiles,
    query_variable,
    series,
    target,
)

# Label selectors shared by the panels: the dashboard's instance, backend and task variables.
SEL_BACKEND = f'{SEL_INSTANCE}, backend=~"$backend"'
SEL_TASK = f'{SEL_BACKEND}, task=~"$task"'

ENQUEUED_RATE = "instance_task_backend:background_task_enqueued:rate5m"
STARTED_RATE = "instance_task_backend:background_task_started:rate5m"
FINISHED_RATE = "instance_task_backend_outcome:background_task_finished:rate5m"
# `retry` (a run failed transiently, its task runs again) is not final: ratios leave it out.
FINAL_OUTCOMES = 'outcome=~"success|failure|timeout"'
DELIVERY_ATTEMPTS = "instance_channel_result:notification_delivery_attempts:rate5m"
FAILED_ATTEMPTS = 'result=~"transient_error|permanent_error"'
# The gauges whose label values fill the instance and backend variables.
EITHER_BACKEND = '__name__=~"background_task_capacity|background_task_queue_depth"'


def dashboard() -> dash.Dashboard:
    """Background tasks: traffic, outcomes, latency, backlog, delivery, Celery workers, logs."""
    d = new_dashboard(
        "Background tasks",
        BACKGROUND_TASKS_UID,
        "Every background task run of the notification service (in-process and Celery): "
        "traffic, outcomes, duration, queue wait, backlog, workers and logs.",
        ["notification-service", "background-tasks"],
        link=("HTTP service", HTTP_SERVICE_UID),
        variables=[
            query_variable("instance", f"label_values({{{EITHER_BACKEND}}}, instance)"),
            query_variable(
                "backend", f"label_values({{{EITHER_BACKEND},{SEL_INSTANCE}}}, backend)"
            ),
            query_variable(
                "task", f"label_values(background_task_started_total{{{SEL_BACKEND}}}, task)"
            ),
        ],
    )
    d = add_row(d, "Traffic and outcomes", traffic_and_outcomes())
    d = add_row(d, "Latency", latency())
    d = add_row(d, "Capacity and backlog", capacity_and_backlog())
    d = add_row(d, "Delivery", delivery())
    d = add_row(d, "Celery workers", celery_workers())
    return add_row(d, "Logs", logs())


def traffic_and_outcomes() -> list[PanelBuilder]:
    """Throughput, failure ratio, top exceptions, timeouts and drops."""
    failed = f'{FINISHED_RATE}{{{SEL_TASK}, outcome=~"failure|timeout"}}'
    final = f"{FINISHED_RATE}{{{SEL_TASK}, {FINAL_OUTCOMES}}}"
    dropped = f"instance_task_backend_reason:background_task_dropped:rate5m{{{SEL_TASK}}}"
    return [
        series(
            "Traffic",
            "Tasks enqueued, started and finished per second (finished by outcome; retry: "
            "a run failed transiently and its task will run again).",
            "ops",
            [
                (f"sum by (backend) ({ENQUEUED_RATE}{{{SEL_TASK}}})", "enqueued {{backend}}"),
                (f"sum by (backend) ({STARTED_RATE}{{{SEL_TASK}}})", "started {{backend}}"),
                (f"sum by (outcome) ({FINISHED_RATE}{{{SEL_TASK}}})", "finished {{outcome}}"),
            ],
        ),
        series(
            "Failure ratio",
            "Share of final outcomes that are failure or timeout, per task "
            "(objective: at most 5%).",
            "percentunit",
            [(f"sum by (task) ({failed}) / sum by (task) ({final})", "{{task}}")],
            limit=0.05,
        ),
        _top_exceptions(),
        series(
            "Timeouts",
            "Runs ending with outcome timeout per second, per task.",
            "ops",
            [(f'sum by (task) ({FINISHED_RATE}{{{SEL_TASK}, outcome="timeout"}})', "{{task}}")],
            span=8,
        ),
        series(
            "Dropped tasks",
            "Tasks dropped per second, by reason (each one a lost notification).",
            "ops",
            [(f"sum by (task, reason) ({dropped})", "{{task}} {{reason}}")],
            span=8,
        ),
    ]


def _top_exceptions() -> bargauge.Panel:
    return (
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
            target(
                "topk(10, sum by (exception, task) "
                f"(increase(background_task_failures_total{{{SEL_TASK}}}[$__range])))",
                "{{exception}} ({{task}})",
                instant=True,
            )
        )
    )


def latency() -> list[PanelBuilder]:
    """Run duration by outcome (with exemplars) and queue wait quantiles."""
    duration = f"rate(background_task_duration_seconds_bucket{{{SEL_TASK}}}[$__rate_interval])"
    wait = (
        f"instance_le_task_backend:background_task_queue_wait_seconds_bucket:rate5m{{{SEL_TASK}}}"
    )
    return [
        latency_quantiles(
            "Task duration by outcome",
            "p50, p95 and p99 run duration by outcome (every outcome, not only successes). "
            "Exemplars (dots) open the run's trace in Tempo.",
            duration,
            "outcome",
        ),
        series(
            "Queue wait",
            "Time from enqueue to start, p95 and p99 per task (objective: p95 under 10s).",
            "s",
            quantiles(wait, "task", (("0.95", "p95"), ("0.99", "p99"))),
            limit=10,
        ),
    ]


def capacity_and_backlog() -> list[PanelBuilder]:
    """Concurrency used against the limit, time since the last success, the waiting tasks."""
    in_progress = f"sum by (backend) (background_task_in_progress{{{SEL_BACKEND}}})"
    capacity = f"sum by (backend) (background_task_capacity{{{SEL_BACKEND}}})"
    return [
        series(
            "In progress vs capacity",
            "Runs in progress and the concurrency limit, per backend; utilisation is their ratio.",
            "short",
            [
                (
                    f"sum by (backend) (background_task_in_progress{{{SEL_TASK}}})",
                    "in progress {{backend}}",
                ),
                (capacity, "capacity {{backend}}"),
            ],
            span=8,
        ),
        series(
            "Utilisation",
            "Runs in progress divided by capacity, per backend.",
            "percentunit",
            [(f"{in_progress} / {capacity}", "{{backend}}")],
            span=8,
            limit=0.9,
        ),
        _time_since_last_success(),
        *_backlog(),
    ]


def _time_since_last_success() -> stat.Panel:
    return (
        stat.Panel()
        .title("Time since last success")
        .description("Per task, how long ago a run last succeeded (no value: never).")
        .datasource(PROMETHEUS)
        .span(8)
        .height(8)
        .unit("s")
        .with_target(
            target(
                "time() - max by (task, backend) (background_task_last_finished_timestamp_seconds"
                f'{{{SEL_TASK}, outcome="success"}} > 0)',
                "{{task}} ({{backend}})",
            )
        )
    )


def _backlog() -> list[PanelBuilder]:
    depth = f"background_task_queue_depth{{{SEL_BACKEND}}}"
    oldest = f"background_task_oldest_pending_timestamp_seconds{{{SEL_BACKEND}}}"
    per_queue = "{{instance}} {{backend}}/{{queue}}"
    return [
        series(
            "Queue depth",
            "Tasks waiting to start, per instance and queue.",
            "short",
            [(depth, per_queue)],
        ),
        series(
            "Age of oldest pending task",
            "Seconds the oldest waiting task has waited (0: queue empty). Objective: under 5m.",
            "s",
            # The gauge is 0 for an empty queue: show age 0 then, not time() - 0.
            [(f"(time() - ({oldest} > 0)) or ({oldest} * 0)", per_queue)],
            limit=300,
        ),
    ]


def delivery() -> list[PanelBuilder]:
    """Delivery attempts by channel and result, their error ratio and latency, retries, errors
    by class and skipped deliveries. Delivery series have no backend label: pick instances."""
    return [*_delivery_attempts(), *_delivery_problems()]


def _delivery_attempts() -> list[PanelBuilder]:
    attempts = f"{DELIVERY_ATTEMPTS}{{{SEL_INSTANCE}}}"
    failed = f"{DELIVERY_ATTEMPTS}{{{SEL_INSTANCE}, {FAILED_ATTEMPTS}}}"
    duration = (
        f"rate(notification_delivery_duration_seconds_bucket{{{SEL_INSTANCE}}}[$__rate_interval])"
    )
    return [
        series(
            "Delivery attempts",
            "Attempts per second (SMTP or SMS provider calls, file writes) by channel and result.",
            "ops",
            [(f"sum by (channel, result) ({attempts})", "{{channel}} {{result}}")],
            span=8,
        ),
        series(
            "Delivery error ratio",
            "Failed attempts (transient and permanent) among all attempts, per channel "
            "(objective: at most 10%).",
            "percentunit",
            [(f"sum by (channel) ({failed}) / sum by (channel) ({attempts})", "{{channel}}")],
            span=8,
            limit=0.1,
        ),
        latency_quantiles(
            "Delivery latency",
            "p50, p95 and p99 of one attempt, connect to accepted, per channel. Exemplars "
            "(dots) open the attempt's trace in Tempo.",
            duration,
            "channel",
            span=8,
        ),
    ]


def _delivery_problems() -> list[PanelBuilder]:
    retried = f'{FINISHED_RATE}{{{SEL_TASK}, outcome="retry"}}'
    transient = f'{DELIVERY_ATTEMPTS}{{{SEL_INSTANCE}, result="transient_error"}}'
    errors = f"instance_channel_error:notification_delivery_errors:rate5m{{{SEL_INSTANCE}}}"
    skipped = f"instance_channel:notification_delivery_skipped:rate5m{{{SEL_INSTANCE}}}"
    return [
        series(
            "Retries",
            "Runs ending with outcome retry per task, and transient delivery errors per channel.",
            "ops",
            [
                (f"sum by (task) ({retried})", "retry {{task}}"),
                (f"sum by (channel) ({transient})", "transient_error {{channel}}"),
            ],
            span=8,
        ),
        series(
            "Delivery errors by class",
            "Failed attempts per second by channel and error class.",
            "ops",
            [(f"sum by (channel, error) ({errors})", "{{channel}} {{error}}")],
            span=8,
        ),
        series(
            "Skipped deliveries",
            "Deliveries not made again because an earlier run of the task delivered already "
            "(a redelivered or retried task), per channel.",
            "ops",
            [(f"sum by (channel) ({skipped})", "{{channel}}")],
            span=8,
        ),
    ]


def celery_workers() -> list[PanelBuilder]:
    """Worker scrape status, runs per worker, Celery queue depth and redeliveries."""
    redelivered = 'background_task_redelivered_total{backend="celery"}[$__rate_interval]'
    return [
        series(
            "Workers up",
            "Scrape status of each Celery worker (1 up, 0 down).",
            "short",
            [('up{job="worker"}', "{{instance}}")],
            span=6,
        ),
        series(
            "In progress per worker",
            "Runs in progress on each Celery worker.",
            "short",
            [('sum by (instance) (background_task_in_progress{job="worker"})', "{{instance}}")],
            span=6,
        ),
        series(
            "Celery queue depth",
            "Messages waiting in each Celery queue.",
            "short",
            [('max by (queue) (background_task_queue_depth{backend="celery"})', "{{queue}}")],
            span=6,
        ),
        series(
            "Redeliveries",
            "Runs of messages delivered again because the worker process running them died "
            "before acknowledging (a steady stream: a task that kills its process).",
            "short",
            [(f"sum by (task) (increase({redelivered}))", "{{task}}")],
            span=6,
        ),
    ]


def logs() -> list[PanelBuilder]:
    """The service's log lines for the selected tasks."""
    return [
        logs_panel(
            "Task logs",
            '{service_name=~"notification-.*"} |= "$trace_id" | json | task=~"$task"',
        )
    ]
