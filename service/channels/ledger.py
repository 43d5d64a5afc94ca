"""The tasks whose message was delivered, remembered for ``NOTIFY_IDEMPOTENCY_TTL_SECONDS``:
a task run again after its delivery succeeded (Celery redelivers a message whose worker died
before acknowledging it; a retry after a reply was lost) does not send again. The id is
recorded right after the server accepted the message, before the run ends (and the message is
acknowledged); a process that dies between the two is the window that can still duplicate."""

import threading
import time
from collections import OrderedDict
from typing import Protocol

import redis

_KEY = "notify:delivered:{}"
_MEMORY_CAPACITY = 100_000


class DeliveredLedger(Protocol):
    def delivered(self, task_id: str) -> bool: ...
    def record(self, task_id: str) -> None: ...


class MemoryLedger:
    """One process's ledger (the in-process backend: its tasks never leave the process)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._until: OrderedDict[str, float] = OrderedDict()

    def delivered(self, task_id: str) -> bool:
        with self._lock:
            until = self._until.get(task_id)
            return until is not None and until > time.monotonic()

    def record(self, task_id: str) -> None:
        with self._lock:
            self._until[task_id] = time.monotonic() + self.ttl
            while len(self._until) > _MEMORY_CAPACITY:
                self._until.popitem(last=False)


class RedisLedger:
    """The ledger every worker shares, in Redis (the Celery backend's broker)."""

    def __init__(self, url: str, ttl: float) -> None:
        self.url = url
        self.ttl = max(1, int(ttl))
        self._client: redis.Redis | None = None

    def _redis(self) -> "redis.Redis":
        if self._client is None:  # in the process that runs tasks (after a prefork fork)
            self._client = redis.Redis.from_url(self.url, socket_timeout=5)
        return self._client

    def delivered(self, task_id: str) -> bool:
        return bool(self._redis().exists(_KEY.format(task_id)))

    def record(self, task_id: str) -> None:
        self._redis().set(_KEY.format(task_id), 1, ex=self.ttl)
