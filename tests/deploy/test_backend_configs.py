"""deploy/*.yaml: collector, Tempo and Loki configs, checked structurally.

No otelcol-contrib, tempo or Grafana Loki binary is installable from the registries CI can
reach (Debian's `loki` package is an unrelated genetics program), so these tests check the
configs' structure and their agreement with docker-compose.yml; deploy/VALIDATION.md says what
only a running stack can prove.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy import REPO
from tests.support.files import load_yaml

DEPLOY = REPO / "deploy"

# Components of the otelcol-contrib distribution that this config may use.
KNOWN_COMPONENTS = {
    "receivers": {"otlp", "filelog"},
    "processors": {"batch", "memory_limiter", "resource", "attributes", "transform", "filter"},
    "exporters": {"otlp", "otlphttp", "debug"},
    "extensions": {"health_check", "file_storage"},
    "connectors": set(),
}
# stanza operators used by the filelog receiver (pkg/stanza/docs/operators).
KNOWN_OPERATORS = {
    "json_parser",
    "regex_parser",
    "filter",
    "move",
    "remove",
    "add",
    "copy",
    "router",
    "container",
    "severity_parser",
    "time_parser",
    "trace_parser",
}
SERVICE_NAMES = ("notification-api", "notification-worker")


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "otel-collector.yaml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def loki() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "loki.yaml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def tempo() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "tempo.yaml")
    assert isinstance(data, dict)
    return data


def _component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_collector_pipelines_reference_defined_components(collector: dict[str, Any]) -> None:
    """Each pipeline uses only defined components, and every defined component is used."""
    pipelines = collector["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert _component_type(name) in ("traces", "metrics", "logs"), name
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), f"{name}: undefined {component}"
                used[kind].add(component)
    for kind, ids in used.items():
        assert set(collector.get(kind) or {}) == ids, f"unused {kind}"
    for ext in collector["service"].get("extensions", []):
        assert ext in collector["extensions"], ext


def test_collector_uses_known_contrib_components(collector: dict[str, Any]) -> None:
    """Component types are ones the contrib distribution ships (typos fail here)."""
    for kind, known in KNOWN_COMPONENTS.items():
        for component_id in collector.get(kind) or {}:
            assert _component_type(component_id) in known, f"{kind}: {component_id}"


def test_collector_memory_limiter_runs_first(collector: dict[str, Any]) -> None:
    """memory_limiter is the first processor and batch the last in every pipeline."""
    for name, pipeline in collector["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter" and processors[-1] == "batch", name


def test_collector_listens_on_all_interfaces(collector: dict[str, Any]) -> None:
    """OTLP gRPC/HTTP, health_check and own metrics bind 0.0.0.0 (defaults are localhost)."""
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert collector["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"
    readers = collector["service"]["telemetry"]["metrics"]["readers"]
    prom = readers[0]["pull"]["exporter"]["prometheus"]
    assert (prom["host"], prom["port"]) == ("0.0.0.0", 8888)


def test_collector_sends_traces_to_tempo_and_logs_to_loki_otlp(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    """Traces go to tempo:4317 over OTLP, logs to Loki's native OTLP endpoint /otlp."""
    pipelines = collector["service"]["pipelines"]
    (trace_exporter,) = pipelines["traces"]["exporters"]
    assert _component_type(trace_exporter) == "otlp"
    assert collector["exporters"][trace_exporter]["endpoint"] == "tempo:4317"
    assert collector["exporters"][trace_exporter]["tls"]["insecure"] is True
    (log_exporter,) = pipelines["logs"]["exporters"]
    assert _component_type(log_exporter) == "otlphttp"
    assert collector["exporters"][log_exporter]["endpoint"] == "http://loki:3100/otlp"
    assert pipelines["traces"]["receivers"] == ["otlp"]
    assert {"tempo", "loki"} <= set(compose["services"])


def test_collector_tails_docker_json_logs(collector: dict[str, Any]) -> None:
    """The logs pipeline reads Docker's json-file logs from the read-only mount."""
    (receiver_id,) = collector["service"]["pipelines"]["logs"]["receivers"]
    assert _component_type(receiver_id) == "filelog"
    receiver = collector["receivers"][receiver_id]
    assert receiver["include"] == ["/var/lib/docker/containers/*/*-json.log"]
    assert receiver["include_file_path"] is True


def test_filelog_operators_are_well_formed(collector: dict[str, Any]) -> None:
    """Operators have known types and unique ids, and every `output` names an operator."""
    operators = collector["receivers"]["filelog/containers"]["operators"]
    ids = [op["id"] for op in operators]
    assert len(ids) == len(set(ids))
    for op in operators:
        assert op["type"] in KNOWN_OPERATORS, op
        if "output" in op:
            outputs = op["output"] if isinstance(op["output"], list) else [op["output"]]
            assert set(outputs) <= set(ids), op
        if op["type"] in ("move", "copy"):
            assert op.get("from") and op.get("to"), op
        if op["type"] == "remove":
            assert op.get("field"), op
        if "on_error" in op:
            assert op["on_error"] in ("send", "send_quiet", "drop", "drop_quiet"), op


def test_filelog_keeps_only_our_services_and_names_them(collector: dict[str, Any]) -> None:
    """Lines without our OTEL_SERVICE_NAME are dropped; the name becomes resource service.name."""
    operators = collector["receivers"]["filelog/containers"]["operators"]
    types = [op["type"] for op in operators]
    envelope, drop = operators[0], operators[1]
    assert envelope["type"] == "json_parser" and envelope["timestamp"]["parse_from"] == (
        "attributes.time"
    )
    assert drop["type"] == "filter"
    assert "attributes.attrs?.OTEL_SERVICE_NAME not in" in drop["expr"]
    for name in SERVICE_NAMES:
        assert f'"{name}"' in drop["expr"]
    moves = {(op["from"], op["to"]) for op in operators if op["type"] == "move"}
    assert ("attributes.attrs.OTEL_SERVICE_NAME", 'resource["service.name"]') in moves
    assert ("attributes.log", "body") in moves
    # The filter runs before anything else touches the entry.
    assert types.index("filter") == 1


def test_filelog_parses_the_application_json_line(collector: dict[str, Any]) -> None:
    """The app's JSON line is parsed after it became the body; level and trace ids are used."""
    operators = collector["receivers"]["filelog/containers"]["operators"]
    ids = [op["id"] for op in operators]
    app = operators[ids.index("app_json")]
    assert ids.index("line_to_body") < ids.index("app_json")
    assert app["parse_from"] == "body" and app["on_error"] == "send_quiet"
    assert app["severity"]["parse_from"] == "attributes.level"
    assert app["trace"]["trace_id"]["parse_from"] == "attributes.trace_id"
    assert app["trace"]["span_id"]["parse_from"] == "attributes.span_id"


def test_collector_ports_match_compose(compose: dict[str, Any]) -> None:
    """The app services export to the collector's OTLP/HTTP port that the config opens."""
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")


def test_loki_accepts_otlp_with_structured_metadata(loki: dict[str, Any]) -> None:
    """Single binary Loki: no auth, tsdb + schema v13 and structured metadata (needed for OTLP)."""
    assert loki["auth_enabled"] is False
    assert loki["limits_config"]["allow_structured_metadata"] is True
    (schema,) = loki["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    assert loki["common"]["replication_factor"] == 1
    assert loki["common"]["ring"]["kvstore"]["store"] == "inmemory"


def test_loki_stores_everything_on_its_volume(
    loki: dict[str, Any], compose: dict[str, Any]
) -> None:
    """Loki's paths all live under the loki-data volume mount, and it listens where checked."""
    mount = next(
        v.split(":")[1] for v in compose["services"]["loki"]["volumes"] if v.startswith("loki-")
    )
    paths = [
        loki["common"]["path_prefix"],
        *loki["common"]["storage"]["filesystem"].values(),
        loki["compactor"]["working_directory"],
    ]
    for path in paths:
        assert path.startswith(mount + "/") or path == mount, path
    assert loki["server"]["http_listen_port"] == 3100
    check = " ".join(compose["services"]["loki"]["healthcheck"]["test"])
    assert "localhost:3100/ready" in check


def test_tempo_receives_otlp_and_stores_locally(
    tempo: dict[str, Any], compose: dict[str, Any]
) -> None:
    """Tempo takes OTLP on 0.0.0.0:4317/4318 and keeps WAL and blocks on its volume."""
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    trace = tempo["storage"]["trace"]
    assert trace["backend"] == "local"
    mount = next(
        v.split(":")[1] for v in compose["services"]["tempo"]["volumes"] if v.startswith("tempo-")
    )
    assert trace["wal"]["path"].startswith(mount + "/")
    assert trace["local"]["path"].startswith(mount + "/")
    assert tempo["server"]["http_listen_port"] == 3200
    check = " ".join(compose["services"]["tempo"]["healthcheck"]["test"])
    assert "localhost:3200/ready" in check


def test_configs_use_only_known_top_level_sections(
    collector: dict[str, Any], loki: dict[str, Any], tempo: dict[str, Any]
) -> None:
    """Top-level keys are sections the three programs know (a typo would stop them at start)."""
    assert set(collector) <= {
        "receivers",
        "processors",
        "exporters",
        "extensions",
        "connectors",
        "service",
    }
    assert set(loki) <= {
        "auth_enabled",
        "server",
        "common",
        "schema_config",
        "storage_config",
        "limits_config",
        "compactor",
        "query_range",
        "ruler",
        "analytics",
        "pattern_ingester",
        "ingester",
        "distributor",
        "querier",
        "frontend",
    }
    assert set(tempo) <= {
        "stream_over_http_enabled",
        "server",
        "distributor",
        "ingester",
        "compactor",
        "storage",
        "querier",
        "query_frontend",
        "metrics_generator",
        "overrides",
        "usage_report",
        "memberlist",
    }
