"""The http-service dashboard: the requests the notification API serves, one function a row.

The dashboard has no collapsible Grafana rows; each function here returns one line of the grid
(24 columns wide), top to bottom: traffic and errors, latency, load and SLO, the process's own
health, logs.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from .common import (
    BACKGROUND_TASKS_UID,
    HTTP_SERVICE_UID,
    SEL_INSTANCE,
    PanelBuilder,
    add_panels,
    latency_quantiles,
    logs_panel,
    new_dashboard,
    quantiles,
    query_variable,
    series,
)

SEL_ROUTE = f'{SEL_INSTANCE}, route=~"$route"'
REQUESTS = "instance_method_route_status_code:http_server_requests:rate5m"
REQUEST_COUNT = "http_server_request_duration_seconds_count"


def dashboard() -> dash.Dashboard:
    """HTTP service: request rate, errors, latency, in-flight requests, logs."""
    d = new_dashboard(
        "HTTP service",
        HTTP_SERVICE_UID,
        "Requests served by the notification API.",
        ["notification-service", "http"],
        link=("Background tasks", BACKGROUND_TASKS_UID),
        variables=[
            query_variable("instance", "label_values(http_server_active_requests, instance)"),
            query_variable("route", f"label_values({REQUEST_COUNT}{{{SEL_INSTANCE}}}, route)"),
        ],
    )
    rows = [traffic_and_errors(), latency(), load_and_slo(), service_health(), logs()]
    return add_panels(d, [panel for row in rows for panel in row])


def traffic_and_errors() -> list[PanelBuilder]:
    """Requests per second and the share answered with a 5xx."""
    return [
        series(
            "Request rate",
            "Requests per second by route and status code.",
            "reqps",
            [
                (
                    f"sum by (route, status_code) ({REQUESTS}{{{SEL_ROUTE}}})",
                    "{{route}} {{status_code}}",
                )
            ],
        ),
        series(
            "5xx ratio",
            "Share of requests answered with a 5xx status (objective: at most 5%).",
            "percentunit",
            [
                (
                    f'(sum({REQUESTS}{{{SEL_ROUTE}, status_code=~"5.."}}) or vector(0))'
                    f" / sum({REQUESTS}{{{SEL_ROUTE}}})",
                    "5xx ratio",
                )
            ],
            limit=0.05,
        ),
    ]


def latency() -> list[PanelBuilder]:
    """Request duration quantiles per route, full width, with exemplars."""
    rate = f"rate(http_server_request_duration_seconds_bucket{{{SEL_ROUTE}}}[$__rate_interval])"
    return [
        latency_quantiles(
            "Latency by route",
            "p50, p95 and p99 request duration per route (until the response is sent; background "
            "work is not included). Exemplars open the request's trace.",
            rate,
            "route",
            span=24,
        )
    ]


def load_and_slo() -> list[PanelBuilder]:
    """Requests in flight and the latency SLO's error ratio over its windows."""
    slo = "job:http_server_request_latency_slo_errors"
    return [
        series(
            "Active requests",
            "Requests being served right now, by method.",
            "short",
            [(f"sum by (method) (http_server_active_requests{{{SEL_INSTANCE}}})", "{{method}}")],
        ),
        series(
            "Latency SLO: requests slower than 0.5s",
            "Share of user requests slower than 0.5s over 5m, 1h and 6h windows (budget: 1%).",
            "percentunit",
            [
                (f"{slo}:ratio_rate{window}", f"{window} {{{{job}}}}")
                for window in ("5m", "1h", "6h")
            ],
            limit=0.01,
        ),
    ]


def service_health() -> list[PanelBuilder]:
    """The API process itself: event-loop lag and the spans it exports or loses."""
    lag = f"rate(event_loop_lag_seconds_bucket{{{SEL_INSTANCE}}}[$__rate_interval])"
    exported = f"rate(tracing_spans_exported_total{{{SEL_INSTANCE}}}[$__rate_interval])"
    dropped = f"rate(tracing_spans_dropped_total{{{SEL_INSTANCE}}}[$__rate_interval])"
    return [
        series(
            "Event-loop lag",
            "How late the API's event loop wakes up (p99 and max bucket): a task that blocks the "
            "loop shows here (alert EventLoopStalled).",
            "s",
            quantiles(lag, "instance", (("0.99", "p99"), ("1", "max"))),
            limit=0.5,
        ),
        series(
            "Spans exported and lost",
            "Spans sent to the OTLP collector per second, and those lost: dropped (export queue "
            "full, shutdown) or refused by the collector (alert TracingSpansLost).",
            "short",
            [
                (f"sum by (outcome) ({exported})", "exported {{outcome}}"),
                (f"sum by (reason) ({dropped})", "dropped {{reason}}"),
            ],
        ),
    ]


def logs() -> list[PanelBuilder]:
    """The API's log lines."""
    return [logs_panel("API logs", '{service_name="notification-api"} |= "$trace_id" | json')]
