""".env.example: the variables a user sets for the compose stack."""

from __future__ import annotations

from typing import Any

from tests.support.deploy import CONTRACT_SETTINGS, ENV_EXAMPLE, REPO

# Delivery and retry settings (service/settings.py, observability/settings.py) and their
# defaults; .env.example lists each, with the default unless the stack sets its own value
# (e-mail to the mailpit service) or it is a secret or optional path (commented out, no value).
DELIVERY_SETTINGS = {
    "NOTIFY_EMAIL_CHANNEL": "file",
    "NOTIFY_SMTP_HOST": "localhost",
    "NOTIFY_SMTP_PORT": "587",
    "NOTIFY_SMTP_SECURITY": "starttls",
    "NOTIFY_SMTP_USERNAME": "",
    "NOTIFY_SMTP_PASSWORD": "",
    "NOTIFY_SMTP_FROM": "notifications@localhost",
    "NOTIFY_SMTP_CA_FILE": "",
    "NOTIFY_SMS_CHANNEL": "file",
    "NOTIFY_SMS_HTTP_URL": "",
    "NOTIFY_SMS_HTTP_TOKEN": "",
    "NOTIFY_DELIVERY_TIMEOUT_SECONDS": "10",
    "NOTIFY_IDEMPOTENCY_TTL_SECONDS": "86400",
    "NOTIFY_TASK_MAX_RETRIES": "3",
    "NOTIFY_TASK_RETRY_BACKOFF_SECONDS": "1",
    "NOTIFY_TASK_RETRY_MAX_BACKOFF_SECONDS": "60",
}
STACK_VALUES = {
    "NOTIFY_EMAIL_CHANNEL": "smtp",
    "NOTIFY_SMTP_HOST": "mailpit",
    "NOTIFY_SMTP_PORT": "1025",
    "NOTIFY_SMTP_SECURITY": "none",
}
COMMENTED_OUT = {"NOTIFY_SMTP_PASSWORD", "NOTIFY_SMS_HTTP_TOKEN", "NOTIFY_SMTP_CA_FILE"}


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


def test_env_example_lists_the_delivery_settings(env_example: dict[str, str]) -> None:
    """Every delivery and retry setting is listed with its default or the stack's value;
    secrets and the CA file only as commented-out lines, never with a value."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name, default in DELIVERY_SETTINGS.items():
        if name in COMMENTED_OUT:
            assert f"# {name}=\n" in text, name
            assert name not in env_example, name
        else:
            assert env_example[name] == STACK_VALUES.get(name, default), name


def test_delivery_defaults_match_the_settings_classes() -> None:
    """The defaults above are the settings classes' own."""
    from service.settings import Settings

    fields = Settings.model_fields
    for name, default in DELIVERY_SETTINGS.items():
        value = fields[name.removeprefix("NOTIFY_").lower()].default
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        shown = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        assert shown == default, (name, value)
