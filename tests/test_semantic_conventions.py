"""What spans say about the service and the request, against real processes exporting to a real
OTLP/HTTP receiver: the resource (``service.name`` as the SDK ranks the variables,
``service.version``), the instrumentation scopes' version, and the HTTP server span's request
attributes (OpenTelemetry semantic conventions)."""

from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.semconv._incubating.attributes import messaging_attributes

from observability import names
from observability.tracing.destination import Destination, broker_address
from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, WorkerProcess

VERSION = metadata.version("observable-notify")


def export_env(receiver: OtlpReceiver, **env: str) -> dict[str, str]:
    """Export to ``receiver`` with no ``OTEL_SERVICE_NAME`` of the helper's, plus ``env``."""
    exported = otlp_env(receiver)
    del exported["OTEL_SERVICE_NAME"]
    return exported | env


def resource_of(receiver: OtlpReceiver, span: Span) -> dict[str, Any]:
    """The resource attributes ``span`` was exported with."""
    with receiver.lock:
        return next(resource for resource, s in receiver.spans if s.span_id == span.span_id)


def one_span(receiver: OtlpReceiver, name: str) -> Span:
    return wait_until(lambda: receiver.named(name), what=f"a span {name!r}")[0]


@pytest.mark.parametrize(
    ("env", "service_name", "service_version"),
    [
        ({"NOTIFY_SERVICE_NAME": "ours"}, "ours", VERSION),
        (
            {
                "NOTIFY_SERVICE_NAME": "ours",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,service.version=9.9",
            },
            "from-attributes",
            "9.9",
        ),
        (
            {
                "NOTIFY_SERVICE_NAME": "ours",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes",
                "OTEL_SERVICE_NAME": "from-service-name",
            },
            "from-service-name",
            VERSION,
        ),
    ],
    ids=["notify-service-name", "resource-attributes", "otel-service-name"],
)
def test_api_resource_follows_the_sdk_precedence(
    start_service: Any,
    otlp_receiver: OtlpReceiver,
    env: dict[str, str],
    service_name: str,
    service_version: str,
) -> None:
    """The API's service.name: OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES, else
    NOTIFY_SERVICE_NAME; service.version: OTEL_RESOURCE_ATTRIBUTES, else the package's; the
    server and task spans' scopes carry the package's version."""
    service: ServiceProcess = start_service(**export_env(otlp_receiver, **env))
    service.client.post("/send-notification/a@example.com")
    server = one_span(otlp_receiver, "POST /send-notification")
    task = one_span(otlp_receiver, "background_task write_log")
    for span in (server, task):
        resource = resource_of(otlp_receiver, span)
        assert (resource["service.name"], resource["service.version"]) == (
            service_name,
            service_version,
        )
    assert otlp_receiver.scopes[server.span_id] == ("observability.http.telemetry", VERSION)
    assert otlp_receiver.scopes[task.span_id] == ("observability.runner", VERSION)


def test_worker_resource_follows_the_sdk_precedence(
    start_service: Any,
    start_worker: Any,
    broker_url: str,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,
) -> None:
    """A worker's service.name is NOTIFY_SERVICE_NAME plus -worker, unless
    OTEL_RESOURCE_ATTRIBUTES (or OTEL_SERVICE_NAME) names one; its run spans' scope carries the
    package's version."""
    env = {"NOTIFY_DATA_DIR": str(tmp_path / "data"), "NOTIFY_BROKER_URL": broker_url}
    api = start_service(NOTIFY_TASK_BACKEND="celery", **env)
    cases = [
        ({"NOTIFY_SERVICE_NAME": "ops"}, "ops-worker"),
        (
            {"NOTIFY_SERVICE_NAME": "ops", "OTEL_RESOURCE_ATTRIBUTES": "service.name=crew"},
            "crew",
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=crew", "OTEL_SERVICE_NAME": "io"}, "io"),
    ]
    for done, (worker_env, service_name) in enumerate(cases):
        worker: WorkerProcess = start_worker(
            **env, NOTIFY_TASK_CONCURRENCY="1", **export_env(otlp_receiver, **worker_env)
        )
        api.client.post("/send-notification/a@example.com")
        runs = wait_until(lambda n=done: otlp_receiver.named("process celery")[n:], what="a run")
        resource = resource_of(otlp_receiver, runs[0])
        assert (resource["service.name"], resource["service.version"]) == (service_name, VERSION)
        assert otlp_receiver.scopes[runs[0].span_id] == ("observability.runner", VERSION)
        worker.terminate()


def test_server_span_carries_the_request_attributes(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """The server span has user_agent.original, client.address (host part zeroed),
    server.address/.port, network.protocol.version and url.query, the query's values and any
    e-mail masked."""
    service: ServiceProcess = start_service(**otlp_env(otlp_receiver))
    agent = "notify-check/1.0 (+mailto:ops.team@example.com)"
    response = service.client.post(
        "/send-sms",
        params={"phone": "+8613812345678", "msg": "meet at noon"},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 200
    attributes = span_attributes(one_span(otlp_receiver, "POST /send-sms"))
    assert attributes["user_agent.original"] == "notify-check/1.0 (+mailto:o***@example.com)"
    assert attributes["client.address"] == "127.0.0.0"
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", service.port)
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["url.query"] == "phone=***&msg=***"
    assert (attributes["url.scheme"], attributes["url.path"]) == ("http", "/send-sms")
    assert "error.type" not in attributes


def test_query_is_recorded_as_sent_when_masking_is_off(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """NOTIFY_LOG_MASKING=false (debugging only): url.query keeps its values, client.address
    its host part."""
    service: ServiceProcess = start_service(**otlp_env(otlp_receiver), NOTIFY_LOG_MASKING="false")
    service.client.post("/send-sms", params={"phone": "+8613812345678", "msg": "plain"})
    attributes = span_attributes(one_span(otlp_receiver, "POST /send-sms"))
    assert attributes["url.query"] == "phone=%2B8613812345678&msg=plain"
    assert attributes["client.address"] == "127.0.0.1"


def test_messaging_attribute_names_are_the_conventions() -> None:
    """The messaging attribute names defined once in observability.names are the semantic
    conventions' own, and the operation types current ones (not the deprecated ``publish``)."""
    assert names.ATTR_MESSAGING_SYSTEM == messaging_attributes.MESSAGING_SYSTEM
    assert names.ATTR_MESSAGING_DESTINATION == messaging_attributes.MESSAGING_DESTINATION_NAME
    assert names.ATTR_MESSAGING_OPERATION_NAME == messaging_attributes.MESSAGING_OPERATION_NAME
    assert names.ATTR_MESSAGING_OPERATION_TYPE == messaging_attributes.MESSAGING_OPERATION_TYPE
    assert names.ATTR_MESSAGING_MESSAGE_ID == messaging_attributes.MESSAGING_MESSAGE_ID
    types = {value.value for value in messaging_attributes.MessagingOperationTypeValues}
    destination = Destination.of("redis://localhost:6379/0", "celery")
    for operation in (destination.publish, destination.process):
        assert operation.attributes[names.ATTR_MESSAGING_OPERATION_TYPE] in types - {"publish"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://:s3cret@broker.internal:6380/0",
            {"server.address": "broker.internal", "server.port": 6380},
        ),
        (
            "redis://user:s3cret@broker.internal/0",
            {"server.address": "broker.internal", "server.port": 6379},
        ),
        (
            "amqp://guest:s3cret@rabbit//;amqp://other//",
            {"server.address": "rabbit", "server.port": 5672},
        ),
        ("redis+socket:///run/redis.sock", {"server.address": "/run/redis.sock"}),
        ("memory://", {}),
    ],
)
def test_broker_address_is_host_and_port_never_credentials(
    url: str, expected: dict[str, Any]
) -> None:
    """server.address/.port of a broker URL: its host (the first of a failover list) and port
    (else the scheme's default), never its user name or password."""
    assert broker_address(url) == expected
