"""The store every API process of a deployment shares, on the Celery broker's Redis: a
reservation is ``SET NX`` with a lease; only the request that made it completes or releases it
(Lua scripts compare the token)."""

from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.idempotency.entry import Entry, StoreUnavailable

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


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
