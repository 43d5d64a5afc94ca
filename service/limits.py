"""Request size limits, enforced before routing by a pure ASGI middleware: an over-long URL is
414, over-large headers 431, an over-large body 413, each with a JSON body saying which limit."""

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class RequestLimits:
    """Largest URL (path and query string), header block and body accepted, in bytes."""

    max_url_bytes: int
    max_header_bytes: int
    max_body_bytes: int


class BodyTooLarge(Exception):
    """The body grew past the limit while being read."""


def _error(status: int, detail: str, limit: int) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail, "limit_bytes": limit}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


@dataclass(frozen=True)
class _Head:
    """What the limits need of a request's headers, read in one pass."""

    header_bytes: int
    content_length: bytes | None
    chunked: bool  # a body without a declared length

    @classmethod
    def of(cls, scope: Scope) -> "_Head":
        size, length, transfer_encoding = 0, None, False
        for name, value in scope.get("headers", []):
            size += len(name) + len(value) + 4
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                transfer_encoding = True
        return cls(size, length, transfer_encoding and length is None)


async def _read_body(receive: Receive, limit: int) -> list[Message] | None:
    """The request's body messages, or None once they pass ``limit`` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replaying_receive() -> Message:
        return pending.pop(0) if pending else await receive()

    return replaying_receive


class RequestLimitsMiddleware:
    """Refuses requests beyond ``limits`` before the app sees them. A chunked body (no
    ``Content-Length``) is read here up to the limit first; any body is also counted as the app
    reads it."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = _Head.of(scope)
        refusal = self._check_head(scope, head)
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        limit = self.limits.max_body_bytes
        if head.chunked:  # no length given: read it here, up to the limit
            buffered = await _read_body(receive, limit)
            if buffered is None:
                for message in _error(413, "request body too large", limit):
                    await send(message)
                return
            receive = _replay(buffered, receive)
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            for message in _error(413, "request body too large", limit):
                await send(message)

    def _check_head(self, scope: Scope, head: _Head) -> tuple[Message, Message] | None:
        limits = self.limits
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope.get("query_string", b"")
        )
        if url_bytes > limits.max_url_bytes:
            return _error(414, "request URL (path and query string) too long", limits.max_url_bytes)
        if head.header_bytes > limits.max_header_bytes:
            return _error(431, "request header fields too large", limits.max_header_bytes)
        if head.content_length is not None:
            try:
                declared = int(head.content_length)
            except ValueError:
                return None  # the server rejects a malformed length itself
            if declared > limits.max_body_bytes:
                return _error(413, "request body too large", limits.max_body_bytes)
        return None
