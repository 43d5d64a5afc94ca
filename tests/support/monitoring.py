"""The monitoring files the stack tests check: paths, the Prometheus binaries, the rule files."""

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.files import load_yaml
from tests.support.processes import ROOT

PROMETHEUS_DIR = ROOT / "prometheus"
GRAFANA_DIR = ROOT / "grafana"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def require_binary(name: str) -> str:
    """Path of a Prometheus binary; a missing one fails the test (never skips it)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"{name} not found: install Debian's prometheus package (apt-get install "
            f"prometheus) so that /usr/bin/{name} exists",
            pytrace=False,
        )
    return path


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group of prometheus/rules/*.yml."""
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(load_yaml(path)["groups"])
    return groups
