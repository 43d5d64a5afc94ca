"""Fixtures of the stack tests: the Prometheus binaries (helpers: tests/support/monitoring.py)."""

import pytest

from tests.support.monitoring import require_binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_binary("prometheus")
