"""What waits in a Celery queue on a Redis broker: the list's length and the enqueue time of
its oldest message (kombu's Redis transport keeps each message as JSON with a base64 body)."""

import base64
import json
from typing import Any, NamedTuple


class QueueState(NamedTuple):
    depth: int
    oldest_enqueued_at: float  # 0: none waiting, or unknown
    reachable: bool


def read_queue(app: Any, queue: str) -> QueueState:
    """The state of ``queue`` on the broker of the Celery ``app`` (depth 0 if the broker is
    not Redis); raises if the broker can't be reached."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
        client = getattr(connection.default_channel, "client", None)
        if client is None:
            return QueueState(0, 0.0, True)
        depth = int(client.llen(queue))
        raw = client.lindex(queue, -1) if depth else None
        return QueueState(depth, enqueued_at(raw), True)


def enqueued_at(raw: bytes | None) -> float:
    """The ``enqueued_at`` of a raw kombu Redis message holding one of our envelopes, or 0."""
    if not raw:
        return 0.0
    try:
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        return float(body[0][0]["enqueued_at"])
    except (ValueError, KeyError, IndexError, TypeError):
        return 0.0
