"""The middleware: reads and fingerprints a POST's body, reserves its key, replays a kept answer
or runs the request and keeps its answer."""

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import anyio
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability import names
from observability.logs.configuration import get_logger
from service.idempotency.entry import (
    Entry,
    Fingerprint,
    StoredResponse,
    StoreUnavailable,
    digest,
)
from service.idempotency.key import MAX_KEY_LENGTH, parse_key
from service.idempotency.store import IdempotencyStore

HEADER = b"idempotency-key"
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
# the response headers a replay repeats (content-length is worked out again)
REPLAYED_HEADERS = frozenset({b"content-type", b"location", b"retry-after"})
IN_FLIGHT_RETRY_AFTER_SECONDS = 1
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# how long a reservation holds without an answer: a process that died mid-request frees its
# keys after this, not after the whole TTL
DEFAULT_LEASE_SECONDS = 60.0
# a response larger than this is passed on as it comes, and not kept
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20

EVENT_STORE_UNAVAILABLE = names.EVENT_IDEMPOTENCY_STORE_UNAVAILABLE
EVENT_STORE_FAILED = names.EVENT_IDEMPOTENCY_STORE_FAILED
EVENT_NOT_KEPT = names.EVENT_IDEMPOTENCY_NOT_KEPT

_log = get_logger("service.idempotency")


class IdempotencyMiddleware:
    """Honours ``Idempotency-Key`` on requests of ``methods`` (POST). The request's body is read
    first (at most ``max_body_bytes``: 413 beyond) to fingerprint it; then the key is reserved
    in ``store``, and the app runs with the body replayed. Requests without the header pass
    straight through. If the store can't be reached the answer is 503 and the app never runs:
    a key that can't be honoured must not enqueue anything."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        ttl_seconds: float,
        max_body_bytes: int,
        methods: Iterable[str] = ("POST",),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.app = app
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_body_bytes = max_body_bytes
        self.methods = frozenset(methods)
        self.lease_seconds = min(lease_seconds, ttl_seconds)
        self.max_response_bytes = max_response_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == HEADER]
        if not values:
            await self.app(scope, receive, send)
            return
        key = parse_key(values)
        if key is None:
            detail = (
                "Idempotency-Key must be sent once, with 1 to "
                f"{MAX_KEY_LENGTH} printable ASCII characters"
            )
            await _answer(scope, send, 400, {"detail": detail})
            return
        body = await self._read_body(receive)
        if body is None:
            await _answer(
                scope,
                send,
                413,
                {"detail": "request body too large", "limit_bytes": self.max_body_bytes},
            )
            return
        if isinstance(body, Disconnected):
            return  # the client is gone before its request was whole
        await self._keyed(scope, receive, send, digest(key.encode()), body)

    async def _keyed(
        self, scope: Scope, receive: Receive, send: Send, key: str, body: bytes
    ) -> None:
        reservation = Entry.reservation(Fingerprint.of(scope, body))
        try:
            held = await self.store.reserve(key, reservation, self.lease_seconds)
        except StoreUnavailable as exc:
            _log.error(EVENT_STORE_UNAVAILABLE, operation="reserve", error_type=str(exc))
            await _answer(scope, send, 503, _UNAVAILABLE, _UNAVAILABLE_HEADERS)
            return
        if held is not None:
            await self._answer_held(scope, send, reservation.fingerprint, held)
            return
        await self._run(scope, receive, send, key, reservation, body)

    async def _answer_held(
        self, scope: Scope, send: Send, fingerprint: Fingerprint, held: Entry
    ) -> None:
        differences = held.fingerprint.differences(fingerprint)
        if differences:
            detail = (
                "Idempotency-Key was already used for a different request (its "
                f"{_names(differences)} differ{'s' if len(differences) == 1 else ''}): "
                "use a new key for a new request"
            )
            await _answer(scope, send, 422, {"detail": detail})
        elif held.response is None:
            detail = (
                "a request with this Idempotency-Key is still in progress: retry once it has "
                "been answered"
            )
            retry = str(IN_FLIGHT_RETRY_AFTER_SECONDS).encode()
            await _answer(scope, send, 409, {"detail": detail}, [(b"retry-after", retry)])
        else:
            kept = held.response
            headers = [*kept.headers, REPLAYED_HEADER]
            await _send_response(scope, send, kept.status, headers, kept.body)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, key: str, reservation: Entry, body: bytes
    ) -> None:
        """Run the app with the body replayed, keep its answer, then send it."""
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:  # the body, then the client's own (its disconnect)
            return pending.pop() if pending else await receive()

        capture = _Capture(send, self.max_response_bytes)
        try:
            await self.app(scope, replay, capture.send)
        except BaseException:
            await self._release(key, reservation)
            raise
        response = capture.response()
        if response is None or response.status >= 500:
            await self._release(key, reservation)
            if response is None and capture.status is not None:
                _log.info(EVENT_NOT_KEPT, status=capture.status)
        else:
            try:
                kept = await self.store.complete(
                    key, replace(reservation, response=response), self.ttl_seconds
                )
            except StoreUnavailable as exc:
                kept = False
                _log.error(EVENT_STORE_FAILED, operation="complete", error_type=str(exc))
            if not kept:
                _log.warning(EVENT_NOT_KEPT, status=response.status)
        await capture.flush()

    async def _release(self, key: str, reservation: Entry) -> None:
        try:
            with anyio.CancelScope(shield=True):  # even when the request was cancelled
                await self.store.release(key, reservation)
        except StoreUnavailable as exc:  # the reservation's lease frees the key in the end
            _log.error(EVENT_STORE_FAILED, operation="release", error_type=str(exc))

    async def _read_body(self, receive: Receive) -> "bytes | Disconnected | None":
        """The whole body; None past ``max_body_bytes``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class Disconnected:
    """The client left before its body was read."""


class _Capture:
    """Holds the app's response until it is whole (and kept), then sends it; one too large to
    hold (past ``limit`` bytes) or of an ASGI extension is passed on as it comes, unkept."""

    def __init__(self, send: Send, limit: int) -> None:
        self._send = send
        self.limit = limit
        self.status: int | None = None
        self.held: list[Message] = []
        self.size = 0
        self.complete = False
        self.streaming = False

    async def send(self, message: Message) -> None:
        if self.streaming:
            await self._send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body":
            self.size += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        if kind not in ("http.response.start", "http.response.body") or self.size > self.limit:
            self.streaming = True
            self.held.append(message)
            await self.flush()
            return
        self.held.append(message)

    def response(self) -> StoredResponse | None:
        """The whole response, as it is kept; None if it was not held whole."""
        if self.streaming or not self.complete or not self.held:
            return None
        start = self.held[0]
        headers = tuple(
            (name.lower(), value)
            for name, value in start.get("headers", [])
            if name.lower() in REPLAYED_HEADERS
        )
        body = b"".join(m.get("body", b"") for m in self.held[1:])
        return StoredResponse(start["status"], headers, body)

    async def flush(self) -> None:
        held, self.held = self.held, []
        for message in held:
            await self._send(message)


_UNAVAILABLE = {
    "detail": "the Idempotency-Key store can't be reached: the request was not run; retry later",
    "reason": "idempotency_store_unavailable",
    "task_ids": [],
    "accepted_task_ids": [],
}
_UNAVAILABLE_HEADERS = [(b"retry-after", str(UNAVAILABLE_RETRY_AFTER_SECONDS).encode())]


async def _answer(
    scope: Scope,
    send: Send,
    status: int,
    content: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    await _send_response(
        scope, send, status, [(b"content-type", b"application/json"), *(headers or [])], body
    )


async def _send_response(
    scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send an answer the middleware gives itself, with the route it is for in ``scope`` (the
    HTTP metrics label it by the route's template, as if the app had answered)."""
    _match_route(scope)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _match_route(scope: Scope) -> None:
    """Best effort: the route the router would pick, looked for in the app's routes and in
    routers included without a prefix (FastAPI keeps an included router as one route)."""
    route = _find_route(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
    if route is not None:
        scope["route"] = route


def _find_route(routes: Iterable[Any], scope: Scope) -> Any:
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.FULL:
            continue
        included = getattr(route, "original_router", None)
        return route if included is None else _find_route(included.routes, scope)
    return None


def _names(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(parts[:-1]), parts[-1])))
