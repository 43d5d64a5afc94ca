"""What both dashboards are made of: datasources, panels, variables and the dashboard frame.

Every panel of the same kind looks the same on both dashboards (a table legend with mean, max
and last value, a red threshold line, 8 grid rows high...) because it is built here, once; the
dashboard modules only say what a panel shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, loki, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    Panel,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

# Datasource uids provisioned by grafana/provisioning/datasources/datasources.yml.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = DataSourceRef(type_val="loki", uid="loki")

BACKGROUND_TASKS_UID = "background-tasks"
HTTP_SERVICE_UID = "http-service"

SEL_INSTANCE = 'instance=~"$instance"'

PanelBuilder: TypeAlias = Builder[Panel]
# A panel's queries: (PromQL expression, legend format) each.
Targets: TypeAlias = list[tuple[str, str]]


# --- queries --------------------------------------------------------------------------------


def target(
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


def _refs(targets: Targets, *, exemplar_on: int | None = None) -> list[Builder[Dataquery]]:
    return [
        target(expr, legend, chr(ord("A") + i), exemplar=(i == exemplar_on))
        for i, (expr, legend) in enumerate(targets)
    ]


# --- panels ---------------------------------------------------------------------------------


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


def series(
    title: str,
    description: str,
    unit: str,
    targets: Targets,
    *,
    exemplar_on: int | None = None,
    span: int = 12,
    limit: float | None = None,
) -> timeseries.Panel:
    """A time series panel; `limit` draws a red threshold line, `exemplar_on` is the index of
    the target whose exemplars are shown."""
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


def quantiles(expr: str, by: str, levels: Iterable[tuple[str, str]]) -> Targets:
    """histogram_quantile targets of the bucket rate `expr`, grouped by `by`: one per
    (quantile, name) of `levels`, its legend the name and the `by` label."""
    return [
        (f"histogram_quantile({q}, sum by (le, {by}) ({expr}))", f"{name} {{{{{by}}}}}")
        for q, name in levels
    ]


P50_P95_P99 = (("0.50", "p50"), ("0.95", "p95"), ("0.99", "p99"))


def latency_quantiles(
    title: str, description: str, bucket_rate: str, by: str, *, span: int = 12
) -> timeseries.Panel:
    """p50, p95 and p99 in seconds of the bucket rate `bucket_rate` per `by`, with the
    exemplars (trace ids) of the p99 target."""
    return series(
        title,
        description,
        "s",
        quantiles(bucket_rate, by, P50_P95_P99),
        exemplar_on=2,
        span=span,
    )


def logs_panel(title: str, expr: str) -> logs.Panel:
    """Loki log lines of `expr`, newest first, full width."""
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


# --- variables ------------------------------------------------------------------------------


def _datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
    )


def query_variable(name: str, query: str) -> dash.QueryVariable:
    """A multi-value Prometheus variable labelled `name`, "All" (.*) by default."""
    return (
        dash.QueryVariable(name)
        .label(name)
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


# --- dashboards -----------------------------------------------------------------------------


def _link(title: str, uid: str) -> dash.DashboardLink:
    return (
        dash.DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .include_vars(False)
        .keep_time(True)
    )


def new_dashboard(
    title: str,
    uid: str,
    description: str,
    tags: list[str],
    *,
    link: tuple[str, str],
    variables: Iterable[dash.QueryVariable],
) -> dash.Dashboard:
    """A dashboard showing the last hour, refreshed every 30s, with a shared crosshair, a link
    (title, uid) to the other dashboard and, around `variables`, the Prometheus datasource
    variable first and the trace_id text box last."""
    d = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(tags)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(1)  # type: ignore[arg-type]  # shared crosshair
        .link(_link(*link))
        .with_variable(_datasource_variable())
    )
    for variable in variables:
        d = d.with_variable(variable)
    return d.with_variable(_trace_id_variable())


def add_panels(d: dash.Dashboard, panels: Iterable[PanelBuilder]) -> dash.Dashboard:
    """Lay `panels` out left to right, wrapping at the grid's 24 columns."""
    for panel in panels:
        d = d.with_panel(panel)
    return d


def add_row(d: dash.Dashboard, title: str, panels: Iterable[PanelBuilder]) -> dash.Dashboard:
    """An expanded row titled `title` holding `panels`."""
    return add_panels(d.with_row(dash.Row(title)), panels)
