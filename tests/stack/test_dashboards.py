"""Grafana dashboards as code: generated JSON is committed, consistent and uses real names."""

from typing import Any

import pytest

from tests.support.dashboards import (
    allowed_metric_names,
    committed_dashboards,
    dashboards_module,
    panels,
    prometheus_exprs,
    provisioned_datasources,
    recording_rule_names,
    resolve_datasource,
    rule_exprs,
    targets,
)
from tests.support.files import load_yaml
from tests.support.monitoring import GRAFANA_DIR
from tests.support.promql import label_names, metric_names

# The Contract's labels (delivery: channel, result, error), plus those Prometheus adds (job,
# instance) and histogram buckets (le).
KNOWN_LABELS = {
    "__name__",  # metric-name selectors in variable queries
    "task",
    "backend",
    "outcome",
    "exception",
    "reason",
    "queue",
    "channel",
    "result",
    "error",
    "method",
    "route",
    "status_code",
    "job",
    "instance",
    "le",
}
EXPECTED = {"background-tasks.json": "background-tasks", "http-service.json": "http-service"}


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return dashboards_module().build_dashboards()  # type: ignore[no-any-return]


def test_committed_json_matches_generator(generated: dict[str, dict[str, Any]]) -> None:
    """grafana/dashboards/*.json is exactly what grafana/dashboards.py generates."""
    module = dashboards_module()
    committed = committed_dashboards()
    assert sorted(committed) == sorted(generated) == sorted(EXPECTED)
    for name, model in generated.items():
        assert committed[name] == model, f"{name} is stale: run python grafana/dashboards.py"
        text = (module.OUT_DIR / name).read_text(encoding="utf-8")
        assert text == module.render_json(model), f"{name} formatting differs"


def test_dashboard_uids_and_panel_ids(generated: dict[str, dict[str, Any]]) -> None:
    """Each dashboard has its fixed uid, titled panels and distinct panel ids."""
    for name, model in generated.items():
        assert model["uid"] == EXPECTED[name]
        ids = [p["id"] for p in panels(model)]
        assert len(ids) == len(set(ids)) and 0 not in ids
        assert all(p.get("title") for p in panels(model))


def test_targets_use_provisioned_datasources(generated: dict[str, dict[str, Any]]) -> None:
    """Every panel and target refers to a datasource uid provisioned with the right type."""
    provisioned = provisioned_datasources()
    assert {"prometheus", "tempo", "loki"} <= set(provisioned)
    for model in generated.values():
        seen = 0
        for panel, target in targets(model):
            for ref in (panel.get("datasource"), target.get("datasource")):
                assert ref, f"{panel['title']}: no datasource"
                uid, kind = resolve_datasource(model, ref)
                assert provisioned.get(uid) == kind, f"{panel['title']}: {uid} ({kind})"
                seen += 1
            assert target.get("refId"), f"{panel['title']}: target without refId"
        assert seen
        for variable in model["templating"]["list"]:
            if variable.get("datasource"):
                uid, kind = resolve_datasource(model, variable["datasource"])
                assert provisioned.get(uid) == kind


def test_datasource_links_point_at_provisioned_uids() -> None:
    """Exemplar, trace-to-logs and derived-field links name provisioned datasources."""
    config = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml")
    by_uid = {ds["uid"]: ds for ds in config["datasources"]}
    prom = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [(d["name"], d["datasourceUid"]) for d in prom] == [("trace_id", "tempo")]
    assert by_uid["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert "trace_id" in by_uid["tempo"]["jsonData"]["tracesToLogsV2"]["query"]
    fields = by_uid["loki"]["jsonData"]["derivedFields"]
    assert [f["datasourceUid"] for f in fields] == ["tempo"]


def test_dashboard_queries_name_only_known_metrics(
    generated: dict[str, dict[str, Any]],
) -> None:
    """Dashboard PromQL selects only contract metrics, recording rules or `up`."""
    allowed = allowed_metric_names()
    for name, model in generated.items():
        exprs = prometheus_exprs(model)
        assert exprs
        for expr in exprs:
            unknown = metric_names(expr) - allowed
            assert not unknown, f"{name}: {expr!r} selects unknown {sorted(unknown)}"


def test_rules_name_only_known_metrics() -> None:
    """Rule expressions select only contract metrics, recording rules or `up`."""
    allowed = allowed_metric_names()
    for expr in rule_exprs():
        unknown = metric_names(expr) - allowed
        assert not unknown, f"{expr!r} selects unknown {sorted(unknown)}"


def test_dashboards_use_recording_rules(generated: dict[str, dict[str, Any]]) -> None:
    """Both dashboards read some recorded series rather than recomputing them."""
    recorded = recording_rule_names()
    for name, model in generated.items():
        used = set().union(*(metric_names(e) for e in prometheus_exprs(model)))
        assert used & recorded, name


def test_logs_panels_query_loki_by_trace_id(generated: dict[str, dict[str, Any]]) -> None:
    """Each dashboard has a Loki logs panel filtered by the trace_id textbox variable."""
    for name, model in generated.items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["trace_id"]["type"] == "textbox"
        logs = [p for p in panels(model) if p["type"] == "logs"]
        assert logs, name
        for panel in logs:
            assert panel["datasource"]["uid"] == "loki"
            for target in panel["targets"]:
                assert "$trace_id" in target["expr"]
                assert "service_name" in target["expr"] and "| json" in target["expr"]


def test_queries_use_only_contract_labels(generated: dict[str, dict[str, Any]]) -> None:
    """Dashboards and rules group and filter only by contract labels, job, instance and le."""
    exprs = rule_exprs()
    for model in generated.values():
        exprs.extend(prometheus_exprs(model))
    for expr in exprs:
        unknown = label_names(expr) - KNOWN_LABELS
        assert not unknown, f"{expr!r} uses unknown labels {sorted(unknown)}"
