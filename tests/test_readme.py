"""The README's reference tables match the code."""

import re
from pathlib import PurePath

from prometheus_client import CollectorRegistry

from observability.metrics.delivery import DeliveryMetrics
from observability.metrics.http import HttpMetrics
from observability.metrics.loop_lag import LoopLagMonitor
from observability.metrics.tasks import TaskMetrics
from observability.tracing.accounting import SpanExportMetrics
from service.settings import Settings
from tests.support.processes import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def table_rows(start: str, end: str) -> list[list[str]]:
    section = README[README.index(start) : README.index(end, README.index(start))]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_metric_reference_matches_the_registry() -> None:
    """Every metric in the README table exists with that type and those labels, and back."""
    registry = CollectorRegistry()
    TaskMetrics(registry)
    DeliveryMetrics(registry)
    HttpMetrics(registry)
    SpanExportMetrics(registry)
    LoopLagMonitor(registry)
    actual = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        actual[name] = family.type
        actual[name + ":labels"] = labels
    documented = {}
    for name, kind, labels, _ in table_rows("<!-- metric-reference", "<!-- /metric-reference"):
        documented[name.strip("`")] = (kind, set(re.findall(r"`(\w+)`", labels)))
    assert set(documented) == {k for k in actual if not k.endswith(":labels")}
    for name, (kind, labels) in documented.items():
        assert actual[name] == kind, name
        # label sets of unobserved families are empty; compare against the declared ones
        metric_labels = _declared_labels(registry, name)
        assert labels == metric_labels, name


def _declared_labels(registry: CollectorRegistry, name: str) -> set[str]:
    collectors = registry._names_to_collectors  # the registry's own index of metric names
    base = name.removesuffix("_total")
    collector = collectors.get(name) or collectors.get(base)
    return set(getattr(collector, "_labelnames", ()))


def test_configuration_table_lists_every_setting() -> None:
    """Every NOTIFY_* setting is in the README's configuration table with its default."""
    rows = {
        row[0].strip("`"): row[2].strip("`")
        for row in table_rows("## Configuration", "The standard OpenTelemetry")
    }
    for field, info in Settings.model_fields.items():
        variable = f"NOTIFY_{field.upper()}"
        assert variable in rows, variable
        assert rows[variable] == _render(info.default), variable


def _render(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, PurePath):
        return f"./{value}"
    return str(value)
