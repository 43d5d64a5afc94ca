"""Fixtures of the deployment checks; the helpers live in tests/support/deploy.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy import COMPOSE_FILE, ENV_EXAMPLE, interpolate, parse_env_file
from tests.support.files import load_yaml


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def rendered_compose(compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose would see it with .env.example plus a Grafana password."""
    env = dict(env_example, GRAFANA_ADMIN_PASSWORD="test-password")
    rendered = interpolate(compose, env)
    assert isinstance(rendered, dict)
    return rendered
