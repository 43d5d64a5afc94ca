"""Prometheus configuration and rules: promtool accepts them and their unit tests pass."""

import subprocess
from collections import defaultdict
from pathlib import Path

import yaml

from tests.stack.live import local_prometheus_config
from tests.support.files import load_yaml
from tests.support.monitoring import (
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    rule_groups,
)

REQUIRED_ANNOTATIONS = ("summary", "description", "dashboard_url")
DASHBOARD_UIDS = ("background-tasks", "http-service")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, check=False, cwd=PROMETHEUS_DIR.parent
    )
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _alert_rules() -> list[dict[str, object]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config(promtool: str) -> None:
    """promtool accepts prometheus/prometheus.yml and the rule files it names."""
    _run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])


def test_prometheus_yml_loads_every_rule_file() -> None:
    """prometheus.yml loads every rule file and scrapes api:8000 and workers found by DNS."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    named = sorted((PROMETHEUS_DIR / f).resolve() for f in config["rule_files"])
    assert named == [p.resolve() for p in RULE_FILES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["api"]["static_configs"] == [{"targets": ["api:8000"]}]
    assert jobs["worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9101, "refresh_interval": "15s"}
    ]


def test_promtool_check_rules(promtool: str) -> None:
    """promtool accepts every rule file (syntax, PromQL, templates)."""
    assert RULE_FILES, "no rule files under prometheus/rules"
    _run([promtool, "check", "rules", *map(str, RULE_FILES)])


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    """Every promtool unit test in prometheus/tests passes."""
    assert RULE_TEST_FILES, "no promtool tests under prometheus/tests"
    _run([promtool, "test", "rules", *map(str, RULE_TEST_FILES)])


def test_every_alert_has_annotations_and_severity() -> None:
    """Each alert has summary, description, a dashboard_url to a shipped dashboard, a severity."""
    alerts = _alert_rules()
    assert alerts
    for rule in alerts:
        annotations = rule.get("annotations") or {}
        assert isinstance(annotations, dict)
        for key in REQUIRED_ANNOTATIONS:
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']} lacks {key}"
        assert any(f"/d/{uid}" in annotations["dashboard_url"] for uid in DASHBOARD_UIDS), rule
        labels = rule.get("labels") or {}
        assert isinstance(labels, dict)
        assert labels.get("severity") in {"critical", "warning"}, rule["alert"]


def test_recording_rules_follow_naming_convention() -> None:
    """Recording rule names have the level:metric:operations form and are unique."""
    records = [r["record"] for g in rule_groups() for r in g["rules"] if "record" in r]
    assert len(records) == len(set(records))
    for name in records:
        assert len(name.split(":")) == 3 and all(name.split(":")), name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """For each alert, a promtool test expects it firing and another expects no alert."""
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for path in RULE_TEST_FILES:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test") or []:
                if check.get("exp_alerts"):
                    firing[check["alertname"]] += 1
                    for alert in check["exp_alerts"]:
                        assert set(REQUIRED_ANNOTATIONS) <= set(alert["exp_annotations"]), (
                            f"{path.name}: {case['name']}: expected annotations incomplete"
                        )
                else:
                    silent[check["alertname"]] += 1
    names = sorted({str(rule["alert"]) for rule in _alert_rules()})
    assert [n for n in names if not firing[n]] == [], "alerts never tested firing"
    assert [n for n in names if not silent[n]] == [], "alerts never tested silent"
    assert sorted(set(firing) | set(silent)) == names, "tests name alerts that do not exist"


def test_local_flavour_of_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """The localhost config the live test derives from prometheus.yml passes promtool too."""
    config = local_prometheus_config("127.0.0.1:8000")
    assert sorted(config["rule_files"]) == sorted(str(p.resolve()) for p in RULE_FILES)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    _run([promtool, "check", "config", str(path)])
