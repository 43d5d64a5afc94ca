"""The store of idempotency keys: what every store does (``IdempotencyStore``), and the store of
one process, in memory (bounded, with expiry)."""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from service.idempotency.entry import Entry

DEFAULT_MEMORY_CAPACITY = 100_000


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
