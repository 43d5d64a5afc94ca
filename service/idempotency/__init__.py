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

from service.idempotency.entry import Entry, Fingerprint, StoredResponse, StoreUnavailable
from service.idempotency.key import MAX_KEY_LENGTH, parse_key
from service.idempotency.middleware import EVENT_STORE_UNAVAILABLE, IdempotencyMiddleware
from service.idempotency.redis_store import RedisIdempotencyStore
from service.idempotency.store import IdempotencyStore, MemoryIdempotencyStore

__all__ = [
    "EVENT_STORE_UNAVAILABLE",
    "MAX_KEY_LENGTH",
    "Entry",
    "Fingerprint",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "RedisIdempotencyStore",
    "StoreUnavailable",
    "StoredResponse",
    "parse_key",
]
