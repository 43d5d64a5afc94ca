""".env.example: the variables a user sets for the compose stack."""

from __future__ import annotations

from typing import Any

from tests.support.deploy import CONTRACT_SETTINGS, ENV_EXAMPLE, REPO


def test_env_example_lists_every_contract_setting(env_example: dict[str, str]) -> None:
    """Each NOTIFY_* setting of the contract is listed, with the contract's default."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name, default in CONTRACT_SETTINGS.items():
        assert name in text, name
        if name in env_example and name != "NOTIFY_BROKER_URL":
            assert env_example[name] == default, name
    # Inside the stack the broker is the redis service.
    assert env_example["NOTIFY_BROKER_URL"] == "redis://redis:6379/0"


def test_env_example_leaves_the_grafana_password_empty(env_example: dict[str, str]) -> None:
    """GRAFANA_ADMIN_PASSWORD is listed but empty, so a copied file still forces a choice."""
    assert env_example["GRAFANA_ADMIN_PASSWORD"] == ""


def test_every_variable_the_compose_file_reads_is_documented(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    """Each ${VAR} used in docker-compose.yml appears in .env.example."""
    import re

    raw = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    body = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", body))
    assert used, "no variables found"
    assert used <= set(env_example), used - set(env_example)
