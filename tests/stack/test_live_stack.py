"""End to end: the full topology under real Prometheus with the project's config, rules and
dashboards.

Two APIs are scraped by job ``api``: one runs tasks in-process, one publishes them to Celery on a
real Redis (a database of its own), where a real Celery worker (job ``worker``, a static target in
place of the DNS discovery) runs them. In both data dirs ``log.txt`` is a directory, so every
``write_log`` run fails for real on both backends while ``sms_task`` succeeds. A third, saturated
in-process API (concurrency 1, backlog 1, 1 s timeout, ``log.txt`` a FIFO nobody reads) turns a
run into a real timeout and a request into a real 503 ``backlog_full`` drop. E-mail goes over
real SMTP (aiosmtpd): the in-process API's is delivered, the Celery worker's is refused with a
transient 451 on every attempt, retried and never delivered. So every dashboard query must
return data: nothing is allow-listed.
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack.live import (
    CELERY_API,
    INPROCESS_API,
    SMTP_SINK,
    STALLED_API,
    WORKER,
    LocalStack,
    PromQLError,
    drive_all,
    full_topology,
    local_stack,
    overflow_backlog,
    substitute,
)
from tests.support.dashboards import (
    dashboards_module,
    panels,
    recording_rule_names,
    resolve_datasource,
)
from tests.support.monitoring import GRAFANA_DIR
from tests.support.polling import NOT_READY, wait_until
from tests.support.processes import ephemeral_redis

pytestmark = pytest.mark.e2e

# Prometheus may not answer yet: poll it gently, its transport errors count as "not yet".
STACK_POLL: dict[str, Any] = {"interval": 0.25, "ignore": NOT_READY}

KNOWN_TASKS = {"write_log", "sms_task", "safe_write_log"}
DELIVERY = "instance_channel_result:notification_delivery_attempts:rate5m"

# What the stack must show before the tests look at it: failures and successes on both
# backends, a timeout and a backlog_full drop, SMTP deliveries, transient SMTP errors and
# retried runs, all through the recording rules.
SETTLED = (
    'task_backend:background_task_failure_ratio:rate5m{task="write_log", backend="inprocess"} > 0',
    'task_backend:background_task_failure_ratio:rate5m{task="write_log", backend="celery"} > 0',
    'task_backend:background_task_finished:rate5m{task="sms_task", backend="inprocess"} > 0',
    'task_backend:background_task_finished:rate5m{task="sms_task", backend="celery"} > 0',
    'instance_task_backend_outcome:background_task_finished:rate5m{outcome="timeout"} > 0',
    'instance_task_backend_reason:background_task_dropped:rate5m{reason="backlog_full"} > 0',
    'job:http_server_request_errors:ratio_rate5m{job="api"} > 0',
    f'{DELIVERY}{{channel="smtp", result="delivered"}} > 0',
    f'{DELIVERY}{{channel="smtp", result="transient_error"}} > 0',
    'instance_task_backend_outcome:background_task_finished:rate5m{outcome="retry"} > 0',
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    with (
        ephemeral_redis(workdir) as broker_url,
        local_stack(workdir, prometheus_bin, *full_topology(broker_url)) as running,
    ):
        stalled_url = running.apis[STALLED_API].url
        stalled = overflow_backlog(stalled_url)
        assert stalled.get("5xx") == 1, stalled
        urls = [running.apis[INPROCESS_API].url, running.apis[CELERY_API].url]
        counts = drive_all(urls, rounds=15)
        assert counts.get("2xx", 0) >= 120 and counts.get("4xx", 0) >= 60, counts
        # Another refusal, now that Prometheus has scraped the first: that 503 counter series
        # was born at 1, so only a later increase shows in rates.
        assert overflow_backlog(stalled_url).get("5xx") == 1
        prom = running.prom
        missing: list[str] = []

        def settled() -> bool:
            running.check_alive()
            missing[:] = [expr for expr in SETTLED if not prom.query(expr)]
            return not missing

        try:
            wait_until(
                settled,
                60,
                what="failures, successes, a timeout and drops in recorded rates",
                **STACK_POLL,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty: {missing}") from None
        drive_all(urls, rounds=3)
        wait_until(
            lambda: _all_rules_evaluated(prom.rules()),
            30,
            what="every rule evaluated",
            **STACK_POLL,
        )
        yield running


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


def _regex_values(*values: str) -> str:
    """Values of a multi-valued variable as Grafana formats them for a Prometheus regex,
    escaped once more for the PromQL string they land in."""
    escaped = [re.escape(v).replace("\\", "\\\\") for v in values]
    return escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"


def _variables(stack: LocalStack, selection: str) -> dict[str, str]:
    if selection == "all":  # "All" selected: Grafana sends the variables' allValue, ".*"
        return {"instance": ".*", "backend": ".*", "task": ".*", "route": ".*"}
    common = {
        "task": "(write_log|sms_task)",
        "route": "(/send-sms|/send-notification/\\\\{email\\\\})",
    }
    if selection == "inprocess":
        return common | {
            "instance": _regex_values(stack.apis[INPROCESS_API].instance),
            "backend": "inprocess",
        }
    # The Celery API (it exports the Celery queue's depth and age) and its worker (the runs).
    # The task dashboard's instance variable lists only the worker (it is built from
    # background_task_capacity, which a publishing API does not export), so in Grafana the API
    # is a typed-in custom value.
    assert selection == "celery"
    return common | {
        "instance": _regex_values(stack.apis[CELERY_API].instance, stack.workers[WORKER].instance),
        "backend": "celery",
    }


@pytest.mark.parametrize("selection", ["all", "inprocess", "celery"])
def test_every_dashboard_query_evaluates_with_data(stack: LocalStack, selection: str) -> None:
    """Every dashboard PromQL query parses on Prometheus and returns data, for "All" and for
    each backend's instances selected."""
    queries = _dashboard_queries()
    assert len(queries) >= 25
    variables = _variables(stack, selection)
    empty, errors = [], []
    for name, title, ref, expr in queries:
        promql = substitute(expr, variables)
        assert "$" not in promql, promql
        try:
            result = stack.prom.query(promql)
        except PromQLError as exc:
            errors.append(f"{name} / {title} / {ref}: {exc}")
            continue
        if not result:
            empty.append(f"{name} / {title} / {ref}: {promql}")
    assert errors == []
    assert empty == [], "queries without data:\n" + "\n".join(empty)


def _panel_series(stack: LocalStack, title: str, variables: dict[str, str]) -> list[Any]:
    """The instant-query series of every target of the panel titled ``title``."""
    exprs = [expr for _, panel_title, _, expr in _dashboard_queries() if panel_title == title]
    assert exprs, f"no panel titled {title!r}"
    return [s for expr in exprs for s in stack.prom.query(substitute(expr, variables))]


def _nonzero(stack: LocalStack, title: str, variables: dict[str, str]) -> set[str]:
    """The label sets (as "k=v,..." strings) of a panel's series whose value is not zero."""
    return {
        ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items()) if k != "__name__")
        for series in _panel_series(stack, title, variables)
        if float(series["value"][1]) != 0
    }


def test_celery_panels_show_the_worker_and_the_queue(stack: LocalStack) -> None:
    """The Celery row charts the real worker (up, capacity) and the Celery API's queue."""
    variables = _variables(stack, "all")
    worker = stack.workers[WORKER].instance
    assert _nonzero(stack, "Workers up", variables) == {f"instance={worker},job=worker"}
    per_worker = _panel_series(stack, "In progress per worker", variables)
    assert [s["metric"] for s in per_worker] == [{"instance": worker}]
    queues = _panel_series(stack, "Celery queue depth", variables)
    assert [s["metric"] for s in queues] == [{"queue": "celery"}]
    capacity = _nonzero(stack, "In progress vs capacity", _variables(stack, "celery"))
    assert capacity == {"backend=celery"}, capacity


def test_timeout_and_drop_panels_show_real_events(stack: LocalStack) -> None:
    """The saturated API's timeout and backlog_full drop reach the Timeouts and Dropped panels
    (and, through its 503, the 5xx ratio)."""
    variables = _variables(stack, "all")
    assert _nonzero(stack, "Timeouts", variables) == {"task=write_log"}
    assert "reason=backlog_full,task=write_log" in _nonzero(stack, "Dropped tasks", variables)
    assert _nonzero(stack, "5xx ratio", variables)


def test_dashboard_variables_list_the_live_values(stack: LocalStack) -> None:
    """Each label_values() variable query lists the values the running services expose: the
    task dashboard's instances are the processes that run tasks (the in-process APIs and the
    worker), the HTTP dashboard's are the APIs."""
    apis = {running.instance for running in stack.apis.values()}
    runners = {stack.apis[INPROCESS_API].instance, stack.apis[STALLED_API].instance}
    expected = {
        ("background-tasks.json", "instance"): runners | {stack.workers[WORKER].instance},
        ("http-service.json", "instance"): apis,
        ("background-tasks.json", "backend"): {"inprocess", "celery"},
        ("background-tasks.json", "task"): KNOWN_TASKS,
        ("http-service.json", "route"): {"/send-sms", "/safe-notify"},
    }
    seen = 0
    for name, model in dashboards_module().build_dashboards().items():
        for variable in model["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"])
            assert match, variable["query"]
            selector = substitute(match.group(1), _variables(stack, "all"))
            values = set(stack.prom.label_values(match.group(2), selector))
            assert expected[name, variable["name"]] <= values, (name, variable["name"], values)
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
    """Every recording rule yields series from real traffic."""
    missing = [name for name in sorted(recording_rule_names()) if not stack.prom.query(name)]
    assert missing == []


def _active(stack: LocalStack, alertname: str) -> list[dict[str, Any]]:
    return [a for a in stack.prom.alerts() if a["labels"].get("alertname") == alertname]


def test_failure_alert_goes_pending_for_failing_task(stack: LocalStack) -> None:
    """BackgroundTaskHighFailureRatio becomes active for write_log on both backends, never for
    sms_task; CeleryWorkerDown and NotificationAPIDown stay inactive while all is up."""
    wait_until(
        lambda: (
            {
                a["labels"]["backend"]
                for a in _active(stack, "BackgroundTaskHighFailureRatio")
                if a["labels"]["task"] == "write_log"
            }
            >= {"inprocess", "celery"}
        ),
        30,
        what="BackgroundTaskHighFailureRatio to become active for write_log on both backends",
        **STACK_POLL,
    )
    alerts = _active(stack, "BackgroundTaskHighFailureRatio")
    tasks = {a["labels"]["task"] for a in alerts}
    # safe_write_log also writes log.txt and fails; sms_task (sms_log.txt) must not alert.
    assert tasks <= {"write_log", "safe_write_log"}, tasks
    assert all(a["state"] in {"pending", "firing"} for a in alerts)
    assert alerts[0]["annotations"]["dashboard_url"].endswith("/d/background-tasks")
    active = {a["labels"]["alertname"] for a in stack.prom.alerts()}
    assert "NotificationAPIDown" not in active
    assert "CeleryWorkerDown" not in active  # the worker is up and consuming


def test_celery_worker_down_stays_inactive_while_the_worker_is_up(stack: LocalStack) -> None:
    """With tasks published to Celery and the worker up, CeleryWorkerDown's expression is
    empty (neither pending nor firing), and the worker target is up."""
    stack.check_alive()
    up = stack.prom.query('up{job="worker"}')
    assert [(s["metric"]["instance"], s["value"][1]) for s in up] == [
        (stack.workers[WORKER].instance, "1")
    ]
    assert stack.prom.query('sum(rate(background_task_enqueued_total{backend="celery"}[5m])) > 0')
    rule = next(
        r for g in stack.prom.rules() for r in g["rules"] if r.get("name") == "CeleryWorkerDown"
    )
    assert rule["health"] == "ok" and rule["state"] == "inactive", rule
    assert stack.prom.query(rule["query"]) == []


def test_timeout_and_drop_alerts_go_pending(stack: LocalStack) -> None:
    """The real timeout and backlog_full drop make their alerts active for the stalled API's
    tasks."""

    def active_pair() -> bool:
        timeouts = _active(stack, "BackgroundTaskTimeouts")
        drops = _active(stack, "BackgroundTasksDropped")
        return bool(timeouts and drops)

    wait_until(
        active_pair,
        30,
        what="BackgroundTaskTimeouts and BackgroundTasksDropped to be active",
        **STACK_POLL,
    )
    timeouts = _active(stack, "BackgroundTaskTimeouts")
    assert {(a["labels"]["task"], a["labels"]["backend"]) for a in timeouts} == {
        ("write_log", "inprocess")
    }
    drops = _active(stack, "BackgroundTasksDropped")
    assert {a["labels"]["reason"] for a in drops} == {"backlog_full"}


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


def test_delivery_panels_show_smtp_and_file_attempts(stack: LocalStack) -> None:
    """The Delivery row charts real attempts: SMTP delivered (in-process API, accepting server)
    and transiently refused (the worker, busy server), file lines delivered (sms_task) and
    failing (log.txt is a directory); errors by class, retried runs and latency per channel."""
    variables = _variables(stack, "all")
    attempts = _nonzero(stack, "Delivery attempts", variables)
    expected = {
        "channel=smtp,result=delivered",
        "channel=smtp,result=transient_error",
        "channel=file,result=delivered",
        "channel=file,result=permanent_error",
    }
    assert expected <= attempts, attempts
    errors = _nonzero(stack, "Delivery errors by class", variables)
    assert {"channel=smtp,error=ServerBusy", "channel=file,error=IsADirectoryError"} <= errors
    assert {"task=write_log", "channel=smtp"} <= _nonzero(stack, "Retries", variables)
    latency = _panel_series(stack, "Delivery latency", variables)
    assert {"smtp", "file"} <= {s["metric"].get("channel") for s in latency}
    # Per instance: only the in-process API delivers over SMTP, only the worker is refused.
    inprocess = _nonzero(stack, "Delivery attempts", _variables(stack, "inprocess"))
    assert "channel=smtp,result=delivered" in inprocess
    assert "channel=smtp,result=transient_error" not in inprocess
    celery = _nonzero(stack, "Delivery attempts", _variables(stack, "celery"))
    assert "channel=smtp,result=transient_error" in celery
    assert "channel=smtp,result=delivered" not in celery
    # The accepting server really received the mail.
    assert "MESSAGE FOLLOWS" in stack.smtp[SMTP_SINK].process.raw_output()


def test_delivery_alerts_go_pending_for_the_refused_channel(stack: LocalStack) -> None:
    """NotificationChannelNotDelivering becomes active for the worker's SMTP channel only (the
    in-process API delivers; files are written); NotificationDeliveryErrorRatioHigh for smtp."""
    worker = stack.workers[WORKER].instance

    def active() -> bool:
        return bool(
            _active(stack, "NotificationChannelNotDelivering")
            and _active(stack, "NotificationDeliveryErrorRatioHigh")
        )

    wait_until(active, 30, what="the delivery alerts to become active", **STACK_POLL)
    stalled = _active(stack, "NotificationChannelNotDelivering")
    assert {(a["labels"]["instance"], a["labels"]["channel"]) for a in stalled} == {
        (worker, "smtp")
    }
    assert all(a["labels"]["severity"] == "critical" for a in stalled)
    ratio = {a["labels"]["channel"] for a in _active(stack, "NotificationDeliveryErrorRatioHigh")}
    # smtp: the worker's refusals; file: log.txt is a directory in both data dirs.
    assert "smtp" in ratio and ratio <= {"smtp", "file"}, ratio
