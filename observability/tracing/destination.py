"""A broker queue as the OpenTelemetry messaging conventions describe it: the names and the
attributes of the spans that send a message to it (PRODUCER ``publish {queue}``, operation type
``send``) and that process one from it (CONSUMER ``process {queue}``). Only the message id
differs from message to message: everything else is worked out once, here."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.semconv.attributes import server_attributes
from opentelemetry.util.types import AttributeValue

from observability import names

DEFAULT_PORTS: Final = {
    "redis": 6379,
    "rediss": 6379,
    "sentinel": 26379,
    "amqp": 5672,
    "pyamqp": 5672,
    "amqps": 5671,
}


@dataclass(frozen=True)
class Operation:
    """One operation on the queue: its span's name and its attributes but the message id."""

    span_name: str
    attributes: Mapping[str, AttributeValue]


@dataclass(frozen=True)
class Destination:
    """The queue ``publish`` sends tasks to and ``process`` runs them from."""

    publish: Operation
    process: Operation

    @classmethod
    def of(
        cls, broker_url: str, queue: str, system: str = names.MESSAGING_SYSTEM_CELERY
    ) -> "Destination":
        """The ``queue`` of the broker at ``broker_url`` (whose credentials are left out)."""
        common = {
            names.ATTR_MESSAGING_SYSTEM: system,
            names.ATTR_MESSAGING_DESTINATION: queue,
            **broker_address(broker_url),
        }
        return cls(
            _operation(names.PUBLISH_SPAN_PREFIX, "send", queue, common),
            _operation(names.PROCESS_SPAN_PREFIX, "process", queue, common),
        )


def _operation(name: str, kind: str, queue: str, common: Mapping[str, AttributeValue]) -> Operation:
    attributes = {
        **common,
        names.ATTR_MESSAGING_OPERATION_NAME: name,
        names.ATTR_MESSAGING_OPERATION_TYPE: kind,
    }
    return Operation(f"{name} {queue}", attributes)


def broker_address(broker_url: str) -> dict[str, AttributeValue]:
    """``server.address`` and ``server.port`` of a broker URL (the first of a failover list,
    the scheme's default port when it names none), or the path of a Unix socket."""
    first = broker_url.split(";", 1)[0].strip()
    try:
        parts = urlsplit(first)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return {}
    if not host:  # redis+socket:///run/redis.sock: the socket's path
        socket = parts.scheme.endswith("socket") and parts.path
        return {server_attributes.SERVER_ADDRESS: parts.path} if socket else {}
    address: dict[str, AttributeValue] = {server_attributes.SERVER_ADDRESS: host}
    if port is not None:
        address[server_attributes.SERVER_PORT] = port
    return address
