"""docker-compose.yml: Compose Specification schema plus the stack's own rules."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    API_COMMAND,
    COMPOSE_FILE,
    CONTRACT_SETTINGS,
    REPO,
    InterpolationError,
    interpolate,
    parse_duration_seconds,
    require_tool,
)

EXPECTED_SERVICES = {
    "api",
    "worker",
    "redis",
    "prometheus",
    "grafana",
    "otel-collector",
    "tempo",
    "loki",
    "mailpit",
}
# How the api and the workers reach Mailpit (plain SMTP on the compose network).
MAILPIT_SMTP = {
    "NOTIFY_EMAIL_CHANNEL": "smtp",
    "NOTIFY_SMTP_HOST": "mailpit",
    "NOTIFY_SMTP_PORT": "1025",
    "NOTIFY_SMTP_SECURITY": "none",
}
DOCKER_LOGS = "/var/lib/docker/containers"


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("check-jsonschema")
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _volume_entries(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each short-syntax volume entry."""
    entries = []
    for item in service.get("volumes", []):
        assert isinstance(item, str), f"use the short volume syntax: {item!r}"
        parts = re.split(r":(?![^{]*\})", item)  # a ':' inside ${VAR:-x} does not split
        assert len(parts) in (2, 3), f"volume entry needs source:target[:mode]: {item!r}"
        mode = parts[2] if len(parts) == 3 else "rw"
        entries.append((parts[0], parts[1], "ro" in mode.split(",")))
    return entries


def _strings(node: Any) -> list[str]:
    """Every string value (and key) in a parsed YAML document."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [*_strings(k), *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _published_ports(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_compose_file_matches_compose_spec_schema() -> None:
    """The committed compose file validates against the Compose Specification JSON schema."""
    result = _check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_compose_matches_compose_spec_schema(
    rendered_compose: dict[str, Any], tmp_path: Path
) -> None:
    """After variable substitution with .env.example the file still matches the schema."""
    rendered = tmp_path / "rendered-compose.json"
    rendered.write_text(json.dumps(rendered_compose), encoding="utf-8")
    result = _check_jsonschema(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The schema check is live: an unknown service key and a bad healthcheck are rejected."""
    broken = tmp_path / "broken-compose.yml"
    broken.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "api": {
                        "image": "example:1",
                        "healthcheck": {"test": ["CMD", "true"], "retries": "many"},
                        "no_such_key": True,
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    result = _check_jsonschema(broken)
    assert result.returncode != 0
    assert "no_such_key" in result.stdout + result.stderr


def test_stack_has_the_expected_services(compose: dict[str, Any]) -> None:
    """The stack defines exactly the api, worker, redis, mailpit and observability services."""
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    """Every service declares an enabled healthcheck with an exec-form test command."""
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), f"{name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, (
            f"{name}: healthcheck test must be a CMD list, got {test!r}"
        )
        for key in ("interval", "timeout"):
            parse_duration_seconds(check[key])
        assert int(check["retries"]) >= 3, name


def test_depends_on_uses_conditions_on_healthy_services(compose: dict[str, Any]) -> None:
    """depends_on always uses the long form with a health condition on checked services."""
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form"
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec.get("condition") in (
                "service_healthy",
                "service_completed_successfully",
            ), f"{name} -> {target} needs a health condition, got {spec!r}"
            if spec["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{target} has no healthcheck"


def test_depends_on_graph_has_no_cycle(compose: dict[str, Any]) -> None:
    """The start-up order is a DAG, so `docker compose up` can start everything."""
    graph = {n: set(s.get("depends_on", {})) for n, s in compose["services"].items()}
    done: set[str] = set()
    while graph:
        ready = [n for n, deps in graph.items() if deps <= done]
        assert ready, f"dependency cycle among {sorted(graph)}"
        for n in ready:
            done.add(n)
            del graph[n]


def test_app_services_wait_for_redis_and_collector(compose: dict[str, Any]) -> None:
    """api and worker start only once redis and the collector are healthy."""
    for name in ("api", "worker"):
        deps = compose["services"][name]["depends_on"]
        for target in ("redis", "otel-collector"):
            assert deps[target]["condition"] == "service_healthy", (name, target)


def test_volumes_are_named_or_committed_bind_mounts(compose: dict[str, Any]) -> None:
    """Data lives in declared named volumes; the only host-path mount is Docker's log folder."""
    declared = set(compose.get("volumes", {}))
    used: set[str] = set()
    for name, service in compose["services"].items():
        for source, target, read_only in _volume_entries(service):
            if source.startswith("./"):
                continue  # bind mount of a repo file, checked below
            if source.startswith("${DOCKER_CONTAINERS_DIR"):
                assert name == "otel-collector" and target == DOCKER_LOGS and read_only
                continue
            assert not source.startswith("/"), f"{name}: unexpected host path {source}"
            assert source in declared, f"{name}: volume {source} not declared at top level"
            used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_bind_mounted_files_exist_and_are_not_git_ignored(compose: dict[str, Any]) -> None:
    """Every ./ bind mount points at a file or folder of this repo that git will commit."""
    for name, service in compose["services"].items():
        for source, _target, read_only in _volume_entries(service):
            if not source.startswith("./"):
                continue
            path = REPO / source
            assert path.exists(), f"{name} mounts missing {source}"
            assert read_only, f"{name} mounts {source} writable"
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False
            )
            assert ignored.returncode == 1, f"{source} is git-ignored"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    """Every image has an explicit tag, never `latest`; app services build from the Dockerfile."""
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: untagged image {image}"
        assert tag != "latest" and not tag.startswith("$"), f"{name}: unpinned {image}"
    for name in ("api", "worker"):
        assert compose["services"][name]["build"]["dockerfile"] == "Dockerfile"


def test_grafana_admin_password_has_no_default(compose: dict[str, Any]) -> None:
    """Grafana's admin password comes only from GRAFANA_ADMIN_PASSWORD, required, no default."""
    value = compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert value.startswith("${GRAFANA_ADMIN_PASSWORD:?"), value
    assert ":-" not in value
    with pytest.raises(InterpolationError):
        interpolate(value, {})
    with pytest.raises(InterpolationError):
        interpolate(value, {"GRAFANA_ADMIN_PASSWORD": ""})
    assert interpolate(value, {"GRAFANA_ADMIN_PASSWORD": "s3cret"}) == "s3cret"
    refs = [
        m.group(1)
        for v in _strings(compose)
        for m in re.finditer(r"\$\{GRAFANA_ADMIN_PASSWORD([^}]*)\}", v)
    ]
    assert refs and all(op.startswith(":?") for op in refs), refs


def test_worker_can_scale(compose: dict[str, Any]) -> None:
    """The worker has no container_name and publishes no host port, so --scale works."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert not _published_ports(worker)
    assert "9101" in [str(p) for p in worker.get("expose", [])]
    for name, service in compose["services"].items():
        assert "container_name" not in service, f"{name} pins a container name"


def test_published_ports_bind_to_the_configured_address(compose: dict[str, Any]) -> None:
    """Host ports are published on STACK_BIND_ADDRESS (loopback by default), never implicitly."""
    for name, service in compose["services"].items():
        for port in _published_ports(service):
            assert port.startswith("${STACK_BIND_ADDRESS:-127.0.0.1}:"), (name, port)


def test_api_and_worker_entry_points_match_the_contract(compose: dict[str, Any]) -> None:
    """api runs the contract's uvicorn factory, worker `celery -A service.worker worker`."""
    services = compose["services"]
    assert services["api"]["command"] == API_COMMAND
    assert services["worker"]["command"][:4] == ["celery", "-A", "service.worker", "worker"]


def test_app_environment(rendered_compose: dict[str, Any]) -> None:
    """api and worker get the contract settings, the broker and the OTLP export variables."""
    names = {"api": "notification-api", "worker": "notification-worker"}
    for name, service_name in names.items():
        env = rendered_compose["services"][name]["environment"]
        assert env["OTEL_SERVICE_NAME"] == service_name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert env["NOTIFY_BROKER_URL"] == "redis://redis:6379/0"
        assert env["NOTIFY_DATA_DIR"] == "/data"
        assert env["NOTIFY_TASK_BACKEND"] == "inprocess"
        for key in set(CONTRACT_SETTINGS) - {"NOTIFY_DATA_DIR", "NOTIFY_BROKER_URL"}:
            assert env[key] == CONTRACT_SETTINGS[key], (name, key)
        assert ("notify-data", "/data", False) in _volume_entries(
            rendered_compose["services"][name]
        )


def test_task_backend_is_settable_from_env(compose: dict[str, Any]) -> None:
    """NOTIFY_TASK_BACKEND defaults to inprocess but .env can switch it to celery."""
    raw = compose["services"]["api"]["environment"]["NOTIFY_TASK_BACKEND"]
    assert interpolate(raw, {}) == "inprocess"
    assert interpolate(raw, {"NOTIFY_TASK_BACKEND": "celery"}) == "celery"


def test_stop_grace_period_outlasts_the_shutdown_drain(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    """api and worker get more time after SIGTERM than NOTIFY_SHUTDOWN_GRACE_SECONDS."""
    drain = float(env_example["NOTIFY_SHUTDOWN_GRACE_SECONDS"])
    assert drain == float(CONTRACT_SETTINGS["NOTIFY_SHUTDOWN_GRACE_SECONDS"])
    for name in ("api", "worker"):
        grace = parse_duration_seconds(compose["services"][name]["stop_grace_period"])
        assert grace >= drain + 5, f"{name}: stop_grace_period {grace}s vs drain {drain}s"
        assert compose["services"][name].get("init") is True, f"{name}: signals need an init"


def test_app_logs_are_json_file_tagged_with_the_service_name(compose: dict[str, Any]) -> None:
    """api/worker log to json-file with OTEL_SERVICE_NAME attached, as the collector expects."""
    for name in ("api", "worker"):
        logging = compose["services"][name]["logging"]
        assert logging["driver"] == "json-file"
        assert "OTEL_SERVICE_NAME" in logging["options"]["env"].split(",")


def test_prometheus_service(compose: dict[str, Any]) -> None:
    """Prometheus mounts the committed config and rules and runs with exemplar storage."""
    prom = compose["services"]["prometheus"]
    flags = prom["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in flags
    assert any(f.startswith("--storage.tsdb.path=") for f in flags)
    assert "--enable-feature=exemplar-storage" in flags
    mounts = {(s, t) for s, t, _ in _volume_entries(prom)}
    assert ("./prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in mounts
    assert ("./prometheus/rules", "/etc/prometheus/rules") in mounts


def test_grafana_service(compose: dict[str, Any]) -> None:
    """Grafana mounts provisioning and dashboards and waits for its three datasources."""
    grafana = compose["services"]["grafana"]
    mounts = {(s, t) for s, t, _ in _volume_entries(grafana)}
    assert ("./grafana/provisioning", "/etc/grafana/provisioning") in mounts
    assert ("./grafana/dashboards", "/var/lib/grafana/dashboards") in mounts
    assert set(grafana["depends_on"]) == {"prometheus", "loki", "tempo"}


def test_backend_services_mount_their_committed_configs(compose: dict[str, Any]) -> None:
    """collector, tempo and loki read the configs committed under deploy/."""
    expected = {
        "otel-collector": ("./deploy/otel-collector.yaml", "/etc/otelcol-contrib/config.yaml"),
        "tempo": ("./deploy/tempo.yaml", "/etc/tempo/tempo.yaml"),
        "loki": ("./deploy/loki.yaml", "/etc/loki/loki.yaml"),
    }
    for name, (source, target) in expected.items():
        service = compose["services"][name]
        assert (source, target) in {(s, t) for s, t, _ in _volume_entries(service)}
        assert any(target in part for part in service["command"]), (name, service["command"])


def test_collector_reads_docker_logs_read_only(compose: dict[str, Any]) -> None:
    """The collector gets Docker's container log folder as a read-only host-path mount."""
    collector = compose["services"]["otel-collector"]
    entries = {t: ro for _s, t, ro in _volume_entries(collector)}
    assert entries[DOCKER_LOGS] is True
    assert "contrib" in collector["image"]


def test_prometheus_rule_files_resolve_inside_the_container(compose: dict[str, Any]) -> None:
    """Each rule_files entry of prometheus.yml lands on a mounted, committed rules file."""
    import posixpath

    prom = compose["services"]["prometheus"]
    mounts = {t: s for s, t, _ in _volume_entries(prom) if s.startswith("./")}
    config_target = "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO / mounts[config_target]).read_text(encoding="utf-8"))
    rule_files = config.get("rule_files") or []
    assert rule_files, "prometheus.yml loads no rules"
    for entry in rule_files:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(config_target), entry))
        mount = next((t for t in mounts if target == t or target.startswith(t + "/")), None)
        assert mount, f"{entry} -> {target} is not inside a mount"
        source = REPO / (mounts[mount] + target[len(mount) :])
        matches = list(source.parent.glob(source.name))
        assert matches, f"{entry}: nothing at {source}"


def test_app_containers_are_hardened(compose: dict[str, Any]) -> None:
    """api and worker: read-only root filesystem with /tmp on tmpfs and /data a volume, no
    privilege escalation, every capability dropped (the image itself runs as uid 10001)."""
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service.get("read_only") is True, name
        assert "/tmp" in service.get("tmpfs", []), name
        assert ("notify-data", "/data", False) in _volume_entries(service), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert "user" not in service or not str(service["user"]).startswith("0"), name


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    """No password, secret or token in the compose file has a default value: each is either
    required (``${VAR:?...}``) or absent."""
    secret = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)", re.IGNORECASE)
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for key, value in environment.items():
            if secret.search(key):
                text = str(value)
                assert text.startswith("${") and ":?" in text, (name, key, value)


def test_mailpit_service(compose: dict[str, Any]) -> None:
    """Mailpit: SMTP on 1025 for the compose network only, its web UI published on 8025."""
    mailpit = compose["services"]["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit:v")
    assert _published_ports(mailpit) == ["${STACK_BIND_ADDRESS:-127.0.0.1}:8025:8025"]
    assert [str(p) for p in mailpit.get("expose", [])] == ["1025"]
    assert mailpit["healthcheck"]["test"] == ["CMD", "/mailpit", "readyz"]


def test_app_services_deliver_e_mail_to_mailpit(rendered_compose: dict[str, Any]) -> None:
    """With .env.example, api and workers send e-mail over plain SMTP to mailpit:1025, retry
    transient failures (3 times by default) and wait for Mailpit to be healthy."""
    for name in ("api", "worker"):
        service = rendered_compose["services"][name]
        env = service["environment"]
        assert {key: env[key] for key in MAILPIT_SMTP} == MAILPIT_SMTP, name
        assert env["NOTIFY_TASK_MAX_RETRIES"] == "3", name
        assert "NOTIFY_SMTP_PASSWORD" not in env and "NOTIFY_SMS_HTTP_TOKEN" not in env
        assert service["depends_on"]["mailpit"]["condition"] == "service_healthy", name


def test_mailpit_wiring_defaults_without_an_env_file(compose: dict[str, Any]) -> None:
    """Without .env the compose file alone still points e-mail at mailpit."""
    env = interpolate(compose["services"]["api"]["environment"], {})
    assert {key: env[key] for key in MAILPIT_SMTP} == MAILPIT_SMTP
