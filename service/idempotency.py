"""The ``Idempotency-Key`` request header (IETF draft "The Idempotency-Key HTTP Header Field") on
every POST, by a pure ASGI middleware and a store of keys.

The first request with a key reserves it (in flight), runs, and its answer (status, the headers
worth replaying, body) is kept for ``NOTIFY_IDEMPOTENCY_TTL_SECONDS``, with the request's
fingerprint (method, path, query string, SHA-256 of the body). The same key and request again
gets that answer (``Idempotent-Replayed: true``) without reaching the app, so nothing is
enqueued twice; the same key with another request is 422; a repeat while the first is in flight
is 409 with ``Retry-After: 1``. A first answer of 500 or more is not kept: the key is released,
and the client retries with it. Keys are global (there is no authentication to scope them by).

Stores: ``MemoryIdempotencyStore`` (one process) and ``RedisIdempotencyStore`` (every API
process of a deployment, on the Celery broker's Redis). Keys are kept as SHA-256 digests and
the request's parts only as digests; neither keys nor bodies are ever logged."""

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.logs.configuration import get_logger

HEADER = b"idempotency-key"
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
MAX_KEY_LENGTH = 255
# the response headers a replay repeats (content-length is worked out again)
REPLAYED_HEADERS = frozenset({b"content-type", b"location", b"retry-after"})
IN_FLIGHT_RETRY_AFTER_SECONDS = 1
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# how long a reservation holds without an answer: a process that died mid-request frees its
# keys after this, not after the whole TTL
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MEMORY_CAPACITY = 100_000
# a response larger than this is passed on as it comes, and not kept
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20

EVENT_STORE_UNAVAILABLE = "idempotency.store_unavailable"
EVENT_STORE_FAILED = "idempotency.store_failed"
EVENT_NOT_KEPT = "idempotency.response_not_kept"

_log = get_logger("service.idempotency")


class StoreUnavailable(Exception):
    """The store could not be reached or answered in error."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a request: its method, and digests of its path, query and body."""

    method: str
    path: str
    query: str
    body: str

    _PARTS = (("method", "method"), ("path", "path"), ("query", "query string"), ("body", "body"))

    @classmethod
    def of(cls, scope: Scope, body: bytes) -> "Fingerprint":
        return cls(
            scope["method"],
            _digest(scope["path"].encode("utf-8", "surrogatepass")),
            _digest(scope.get("query_string", b"")),
            _digest(body),
        )

    def differences(self, other: "Fingerprint") -> list[str]:
        """The names of the parts in which ``other`` differs."""
        return [name for attr, name in self._PARTS if getattr(self, attr) != getattr(other, attr)]


@dataclass(frozen=True)
class StoredResponse:
    """A kept answer: status, the headers a replay repeats, body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class Entry:
    """What a store holds for a key: the request's fingerprint, the token of the reservation
    that made it, and the answer (None while the request is in flight)."""

    fingerprint: Fingerprint
    token: str
    response: StoredResponse | None = None

    @classmethod
    def reservation(cls, fingerprint: Fingerprint) -> "Entry":
        return cls(fingerprint, secrets.token_hex(16))

    def to_json(self) -> bytes:
        response = self.response
        value: dict[str, Any] = {
            "fingerprint": [
                self.fingerprint.method,
                self.fingerprint.path,
                self.fingerprint.query,
                self.fingerprint.body,
            ],
            "token": self.token,
            "response": None
            if response is None
            else {
                "status": response.status,
                "headers": [[_b64(k), _b64(v)] for k, v in response.headers],
                "body": _b64(response.body),
            },
        }
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "Entry":
        value = json.loads(data)
        kept = value["response"]
        response = (
            None
            if kept is None
            else StoredResponse(
                int(kept["status"]),
                tuple((_unb64(k), _unb64(v)) for k, v in kept["headers"]),
                _unb64(kept["body"]),
            )
        )
        return cls(Fingerprint(*value["fingerprint"]), value["token"], response)


class IdempotencyStore(Protocol):
    """Where keys are kept. ``key`` is already a digest of the client's key. Each call may
    raise ``StoreUnavailable``."""

    async def reserve(self, key: str, reservation: Entry, lease_seconds: float) -> Entry | None:
        """Keep ``reservation`` for ``lease_seconds`` if ``key`` is free, atomically, and return
        None; else return the entry that holds ``key``."""
        ...

    async def complete(self, key: str, reservation: Entry, ttl_seconds: float) -> bool:
        """Replace ``reservation`` (same token; it now carries the answer) for ``ttl_seconds``;
        False if the reservation is no longer there (its lease ran out)."""
        ...

    async def release(self, key: str, reservation: Entry) -> None:
        """Forget ``key`` if ``reservation`` still holds it."""
        ...

    async def close(self) -> None: ...


class MemoryIdempotencyStore:
    """One process's keys: a dict with expiry times, at most ``capacity`` entries (the oldest
    go first beyond it). Every operation is one short critical section without an ``await``:
    atomic on the event loop, and locked for threads."""

    def __init__(
        self,
        capacity: int = DEFAULT_MEMORY_CAPACITY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def reserve(self, key: str, reservation: Entry, lease_seconds: float) -> Entry | None:
        now = self.clock()
        with self._lock:
            self._expire(now)
            held = self._entries.get(key)
            if held is not None and held[1] > now:
                return held[0]
            self._entries.pop(key, None)
            self._entries[key] = (reservation, now + lease_seconds)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return None

    async def complete(self, key: str, reservation: Entry, ttl_seconds: float) -> bool:
        now = self.clock()
        with self._lock:
            held = self._entries.get(key)
            if held is None or held[0].token != reservation.token or held[1] <= now:
                return False
            self._entries[key] = (reservation, now + ttl_seconds)
            self._entries.move_to_end(key)
            return True

    async def release(self, key: str, reservation: Entry) -> None:
        with self._lock:
            held = self._entries.get(key)
            if held is not None and held[0].token == reservation.token:
                del self._entries[key]

    async def close(self) -> None:
        return None

    def _expire(self, now: float) -> None:
        """Drop expired entries from the oldest end (a cheap sweep: it stops at the first
        live one; later expired ones go when looked up or pushed out)."""
        entries = self._entries
        while entries:
            _, (_, until) = next(iter(entries.items()))
            if until > now:
                return
            entries.popitem(last=False)


# Replace / delete only while the reservation with this exact value holds the key.
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisIdempotencyStore:
    """Keys every API process shares, in Redis: ``SET key value NX PX lease`` reserves; the
    answer replaces the reservation (checked by value, in a script) with the TTL."""

    PREFIX = "notify:idempotency:"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: "aioredis.Redis | None" = None,
        timeout: float = 2.0,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("a Redis URL or client is needed")
            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        self.client = client

    async def reserve(self, key: str, reservation: Entry, lease_seconds: float) -> Entry | None:
        name = self.PREFIX + key
        value = reservation.to_json()
        try:
            for _ in range(3):  # the holder may expire between SET NX and GET
                if await self.client.set(name, value, nx=True, px=_ms(lease_seconds)):
                    return None
                held = await self.client.get(name)
                if held is not None:
                    return Entry.from_json(held)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        except (ValueError, LookupError, TypeError) as exc:  # not a value this store wrote
            raise StoreUnavailable(f"unreadable entry ({type(exc).__name__})") from exc
        raise StoreUnavailable("the key kept changing hands")

    async def complete(self, key: str, reservation: Entry, ttl_seconds: float) -> bool:
        reserved = replace(reservation, response=None).to_json()
        try:
            done = await self.client.eval(
                _COMPLETE, 1, self.PREFIX + key, reserved, reservation.to_json(), _ms(ttl_seconds)
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return bool(done)

    async def release(self, key: str, reservation: Entry) -> None:
        try:
            await self.client.eval(_RELEASE, 1, self.PREFIX + key, reservation.to_json())
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        await self.client.aclose()


def parse_key(values: list[bytes]) -> str | None:
    """The key of the header's values: one value, 1 to 255 printable ASCII characters, bare or
    as a structured-field string (``"..."``, as the draft writes it); None if malformed."""
    if len(values) != 1:
        return None
    raw = values[0]
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        inner, key = raw[1:-1], bytearray()
        escaped = False
        for byte in inner:
            if escaped:
                if byte not in b'"\\':
                    return None
                key.append(byte)
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # an unescaped quote inside
                return None
            else:
                key.append(byte)
        if escaped:
            return None
        raw = bytes(key)
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or any(not 0x20 <= byte <= 0x7E for byte in raw):
        return None
    return raw.decode("ascii")


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
        await self._keyed(scope, receive, send, _digest(key.encode()), body)

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


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
