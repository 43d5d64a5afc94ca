"""Walk generated Grafana dashboards: panels, targets, datasources, variables."""

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from observability import names
from tests.support.files import load_yaml
from tests.support.monitoring import GRAFANA_DIR, rule_groups

# The Contract's metric names (shared/DESIGN.md). Histograms expose _bucket, _count, _sum.
CONTRACT_COUNTERS_AND_GAUGES = frozenset(
    {
        "http_server_active_requests",
        "background_task_enqueued_total",
        "background_task_started_total",
        "background_task_finished_total",
        "background_task_failures_total",
        "background_task_dropped_total",
        "background_task_in_progress",
        "background_task_queue_depth",
        "background_task_oldest_pending_timestamp_seconds",
        "background_task_capacity",
        "background_task_last_started_timestamp_seconds",
        "background_task_last_finished_timestamp_seconds",
        names.DELIVERY_ATTEMPTS,
        # the service's own health, beyond the contract (observability/names.py)
        names.SPANS_EXPORTED,
        names.SPANS_DROPPED,
        names.SPANS_QUEUED,
    }
)
CONTRACT_HISTOGRAMS = frozenset(
    {
        "http_server_request_duration_seconds",
        "background_task_queue_wait_seconds",
        "background_task_duration_seconds",
        names.DELIVERY_DURATION,
        names.EVENT_LOOP_LAG,
    }
)
CONTRACT_SERIES = CONTRACT_COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in CONTRACT_HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")
}
# Beyond the contract, exported all the same and listed in the README's metric table (which
# tests/test_readme.py checks against the code).
DOCUMENTED_ADDITIONS = frozenset(
    {"background_task_redelivered_total", names.DELIVERY_ERRORS, names.DELIVERY_SKIPPED}
)


def recording_rule_names() -> set[str]:
    return {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }


def allowed_metric_names() -> set[str]:
    """Names a query may select: contract series (and documented additions), recording rules,
    and `up`."""
    return set(CONTRACT_SERIES) | DOCUMENTED_ADDITIONS | recording_rule_names() | {"up"}


def dashboards_module() -> ModuleType:
    """grafana/dashboards.py, imported by path (grafana/ is not a package)."""
    name = "notification_grafana_dashboards"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GRAFANA_DIR / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def committed_dashboards() -> dict[str, dict[str, Any]]:
    import json

    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    }


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves too)."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(model: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of a dashboard."""
    for panel in panels(model):
        for target in panel.get("targets") or []:
            yield panel, target


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of the provisioned Grafana datasources."""
    config = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml")
    return {ds["uid"]: ds["type"] for ds in config["datasources"]}


def resolve_datasource(model: dict[str, Any], ref: dict[str, Any]) -> tuple[str, str]:
    """(uid, type) of a datasource reference, resolving ${var} through datasource variables."""
    uid = str(ref.get("uid", ""))
    kind = str(ref.get("type", ""))
    var = uid.removeprefix("${").removesuffix("}").removeprefix("$")
    if var != uid:
        for variable in model["templating"]["list"]:
            if variable["name"] == var:
                assert variable["type"] == "datasource", f"{uid} is not a datasource variable"
                assert variable["query"] == kind, f"{uid}: variable of type {variable['query']}"
                return str(variable["current"]["value"]), kind
        raise AssertionError(f"datasource variable {uid} is not defined")
    return uid, kind


def prometheus_exprs(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and query variables."""
    exprs = [
        t["expr"]
        for p, t in targets(model)
        if resolve_datasource(model, t.get("datasource") or p["datasource"])[1] == "prometheus"
    ]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"])
    return exprs


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]]
