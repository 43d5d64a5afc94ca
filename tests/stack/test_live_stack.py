"""End to end: real uvicorn + real Prometheus with the project's config, rules and dashboards.

The data dir's ``log.txt`` is made a directory, so every ``write_log`` run fails (a real failure,
not a mock) while ``sms_task`` succeeds: dashboards and rules see every outcome they chart.
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack.dashboards_util import (
    dashboards_module,
    panels,
    recording_rule_names,
    resolve_datasource,
)
from tests.stack.live import LocalStack, PromQLError, drive_traffic, local_stack, substitute

pytestmark = pytest.mark.e2e

# Valid but may be empty: panels that chart only Celery-worker series. No Celery worker (nor
# broker) runs in this test, so these queries are checked to parse and evaluate, not to return
# data. Each entry must select worker-only series (job="worker" or backend="celery"); the test
# enforces that, so this list cannot hide an in-process panel.
WORKER_ONLY_PANELS = {
    ("background-tasks.json", "Workers up"),
    ("background-tasks.json", "In progress per worker"),
    ("background-tasks.json", "Celery queue depth"),
}
WORKER_ONLY_MARKERS = ('job="worker"', 'backend="celery"')

# Recording rules that stay empty unless the API answers 5xx, which this scenario never causes.
RECORDS_NEEDING_5XX = {"job:http_server_request_errors:ratio_rate5m"}

KNOWN_TASKS = {"write_log", "sms_task", "safe_write_log"}


def _break_log_sink(data_dir: Path) -> None:
    (data_dir / "log.txt").mkdir()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    with local_stack(workdir, prometheus_bin, prepare_data_dir=_break_log_sink) as running:
        counts = drive_traffic(running.api_url, rounds=15)
        assert counts.get("2xx", 0) >= 60 and counts.get("4xx", 0) >= 30, counts
        prom = running.prom

        def failures_recorded() -> bool:
            running.api.check_alive()
            ratio = prom.query(
                'task_backend:background_task_failure_ratio:rate5m{task="write_log"} > 0'
            )
            done = prom.query('task_backend:background_task_finished:rate5m{task="sms_task"} > 0')
            return bool(ratio and done)

        _wait(failures_recorded, 60, "recorded failure ratio of write_log")
        drive_traffic(running.api_url, rounds=3)
        _wait(lambda: _all_rules_evaluated(prom.rules()), 30, "every rule evaluated")
        yield running


def _wait(predicate: Any, timeout: float, what: str) -> None:
    from tests.stack.live import wait_for

    wait_for(predicate, timeout, what)


def _all_rules_evaluated(groups: list[dict[str, Any]]) -> bool:
    return bool(groups) and all(
        rule.get("lastEvaluation", "").startswith("20") and rule.get("health") != "unknown"
        for group in groups
        for rule in group["rules"]
    )


def _dashboard_queries() -> list[tuple[str, str, str, str]]:
    """(file, panel title, refId, expr) of every Prometheus target of every dashboard."""
    queries = []
    for name, model in dashboards_module().build_dashboards().items():
        for panel in panels(model):
            for target in panel.get("targets") or []:
                ref = target.get("datasource") or panel["datasource"]
                if resolve_datasource(model, ref)[1] == "prometheus":
                    queries.append((name, panel["title"], target["refId"], target["expr"]))
    return queries


def _variables(stack: LocalStack, concrete: bool) -> dict[str, str]:
    if not concrete:  # "All" selected: Grafana sends the variables' allValue, ".*"
        return {"instance": ".*", "backend": ".*", "task": ".*", "route": ".*"}
    # Specific selections, multi-valued ones formatted as Grafana does for Prometheus.
    return {
        "instance": re.escape(stack.api_instance).replace("\\", "\\\\"),
        "backend": "inprocess",
        "task": "(write_log|sms_task)",
        "route": "(/send-sms|/send-notification/\\\\{email\\\\})",
    }


@pytest.mark.parametrize("concrete", [False, True], ids=["all-selected", "specific-values"])
def test_every_dashboard_query_evaluates_with_data(stack: LocalStack, concrete: bool) -> None:
    """Every dashboard PromQL query parses on Prometheus and returns data (worker-only aside)."""
    queries = _dashboard_queries()
    assert len(queries) >= 25
    variables = _variables(stack, concrete)
    empty, errors = [], []
    for name, title, ref, expr in queries:
        promql = substitute(expr, variables)
        assert "$" not in promql, promql
        try:
            result = stack.prom.query(promql)
        except PromQLError as exc:
            errors.append(f"{name} / {title} / {ref}: {exc}")
            continue
        if (name, title) in WORKER_ONLY_PANELS:
            assert any(marker in expr for marker in WORKER_ONLY_MARKERS), (title, expr)
            continue
        if not result:
            empty.append(f"{name} / {title} / {ref}: {promql}")
    assert errors == []
    assert empty == [], "queries without data:\n" + "\n".join(empty)


def test_worker_only_allow_list_is_current() -> None:
    """The worker-only allow-list names existing panels only."""
    titles = {(name, title) for name, title, _, _ in _dashboard_queries()}
    assert titles >= WORKER_ONLY_PANELS


def test_dashboard_variables_list_the_live_values(stack: LocalStack) -> None:
    """Each label_values() variable query lists the values the running service exposes."""
    expected = {
        "instance": {stack.api_instance},
        "backend": {"inprocess"},
        "task": KNOWN_TASKS,
        "route": {"/send-sms", "/safe-notify"},
    }
    seen = 0
    for model in dashboards_module().build_dashboards().values():
        for variable in model["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"])
            assert match, variable["query"]
            selector = substitute(match.group(1), _variables(stack, concrete=False))
            values = set(stack.prom.label_values(match.group(2), selector))
            assert expected[variable["name"]] <= values, (variable["name"], values)
            seen += 1
    assert seen >= 5


def test_every_rule_group_evaluates_healthy(stack: LocalStack) -> None:
    """Every recording and alerting rule evaluates with health ok on the live Prometheus."""
    groups = stack.prom.rules()
    names = {group["name"] for group in groups}
    assert {"background_tasks.rates", "background_tasks.alerts", "http_server.alerts"} <= names
    unhealthy = [
        (g["name"], r["name"], r.get("health"), r.get("lastError"))
        for g in groups
        for r in g["rules"]
        if r.get("health") != "ok"
    ]
    assert unhealthy == []
    assert len([r for g in groups for r in g["rules"]]) >= 30


def test_recording_rules_produce_series(stack: LocalStack) -> None:
    """Every recording rule yields series from real traffic (5xx-only ratio aside)."""
    missing = [
        name
        for name in sorted(recording_rule_names() - RECORDS_NEEDING_5XX)
        if not stack.prom.query(name)
    ]
    assert missing == []


def test_failure_alert_goes_pending_for_failing_task(stack: LocalStack) -> None:
    """BackgroundTaskHighFailureRatio becomes active for write_log, not for sms_task."""

    def active() -> list[dict[str, Any]]:
        return [
            a
            for a in stack.prom.alerts()
            if a["labels"].get("alertname") == "BackgroundTaskHighFailureRatio"
        ]

    _wait(active, 30, "BackgroundTaskHighFailureRatio to become active")
    alerts = active()
    tasks = {a["labels"]["task"] for a in alerts}
    # safe_write_log also writes log.txt; whether its handled error counts as a failed run is
    # the service's choice, so it may be active too. sms_task (sms_log.txt) must not be.
    assert "write_log" in tasks and tasks <= {"write_log", "safe_write_log"}, tasks
    assert all(a["state"] in {"pending", "firing"} for a in alerts)
    assert alerts[0]["annotations"]["dashboard_url"].endswith("/d/background-tasks")
    quiet = {a["labels"]["alertname"] for a in stack.prom.alerts()}
    assert "NotificationAPIDown" not in quiet
    assert "CeleryWorkerDown" not in quiet  # no worker deployed, nothing published to Celery


def test_exemplars_reach_prometheus_with_trace_ids(stack: LocalStack) -> None:
    """Prometheus stores trace_id exemplars of the task duration histogram (OpenMetrics)."""
    now = time.time()
    series = stack.prom.exemplars("background_task_duration_seconds_bucket", now - 600, now)
    trace_ids = [e["labels"].get("trace_id", "") for s in series for e in s["exemplars"]]
    assert trace_ids
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids), trace_ids[:3]


def test_render_draws_every_dashboard(stack: LocalStack, tmp_path: Path) -> None:
    """grafana/render.py draws a PNG of each dashboard from the live Prometheus."""
    import importlib.util

    from tests.stack.conftest import GRAFANA_DIR

    spec = importlib.util.spec_from_file_location(
        "notification_grafana_render", GRAFANA_DIR / "render.py"
    )
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    paths = render.render_all(stack.prom.url, tmp_path, range_seconds=120, rate_interval="15s")
    assert sorted(p.name for p in paths) == ["background-tasks.png", "http-service.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 50_000
