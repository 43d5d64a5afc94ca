"""``Idempotency-Key`` on every POST: ``service.idempotency`` through the service app run in this
process (in-memory store; Redis with the Celery backend), on a tiny inline app over both stores,
and the stores themselves, against the test session's own redis-server."""

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from observability import Tasks
from service.idempotency import (
    EVENT_STORE_UNAVAILABLE,
    Entry,
    Fingerprint,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoredResponse,
    parse_key,
)
from service.settings import Settings
from tests.support.idempotency import KeyedApp, ServiceApp, Session
from tests.support.processes import free_port

EMAIL = {"channel": "email", "to": "user@example.com", "text": "hello", "subject": "Hi"}
SMS = {"channel": "sms", "to": "+8613812345678", "text": "hello"}
DURATION_COUNT = "http_server_request_duration_seconds_count"


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# --- the service app (in-memory store) ---------------------------------------------------


def test_replay_returns_the_first_answer_and_enqueues_nothing(tmp_path: Path) -> None:
    """The same key and request again: the first answer (status, body, task ids, Location)
    with Idempotent-Replayed: true; nothing more is enqueued and the task ran once."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> list[httpx.Response]:
        first = await session.post("/notifications", "key-1", json=EMAIL)
        await session.task_finished(first.json()["id"])
        return [first, await session.post("/notifications", "key-1", json=EMAIL)]

    first, again = service.run(body)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == "application/json"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert service.enqueued("write_log") == 1
    assert lines(tmp_path / "log.txt") == ["message to user@example.com"]
    # the replay is labelled by its route, as the first answer was
    assert (
        service.registry.get_sample_value(
            DURATION_COUNT, {"method": "POST", "route": "/notifications", "status_code": "202"}
        )
        == 2
    )


@pytest.mark.parametrize(
    ("path", "params", "task", "count"),
    [
        ("/send-notification/user@example.com", {}, "write_log", 1),
        ("/advanced-notification/user@example.com", {"q": "hi"}, "write_log", 2),
        ("/send-sms", {"phone": "+8613812345678", "msg": "hello"}, "sms_task", 1),
        ("/safe-notify", {}, "safe_write_log", 1),
    ],
)
def test_every_tutorial_post_honours_the_key(
    tmp_path: Path, path: str, params: dict[str, str], task: str, count: int
) -> None:
    """Each tutorial endpoint with a key: the repeat gets the same body and task ids, replayed,
    and enqueues nothing."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> list[httpx.Response]:
        return [await session.post(path, "tutorial", params=params) for _ in range(3)]

    first, *repeats = service.run(body)
    assert first.status_code == 200
    assert len(first.json()["task_ids"]) == count
    for repeat in repeats:
        assert (repeat.status_code, repeat.json()) == (200, first.json())
        assert repeat.headers["idempotent-replayed"] == "true"
    assert service.enqueued(task) == count


@pytest.mark.parametrize(
    ("path", "request_body", "differs"),
    [
        ("/notifications", EMAIL | {"text": "other"}, "body differs"),
        ("/notifications", SMS, "body differs"),
        ("/notifications?x=1", EMAIL, "query string differs"),
        ("/send-notification/user@example.com", EMAIL, "path differs"),
        ("/send-sms?phone=%2B8613812345678", SMS, "path, query string and body differ"),
    ],
)
def test_same_key_with_another_request_is_422(
    tmp_path: Path, path: str, request_body: dict[str, Any], differs: str
) -> None:
    """The same key with another body, query string or path: 422 naming what differs; the
    other request is not run."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> tuple[httpx.Response, httpx.Response]:
        first = await session.post("/notifications", "shared", json=EMAIL)
        return first, await session.post(path, "shared", json=request_body)

    first, other = service.run(body)
    assert first.status_code == 202
    assert other.status_code == 422
    detail = other.json()["detail"]
    assert isinstance(detail, str) and "Idempotency-Key" in detail and differs in detail
    assert service.enqueued("write_log") == 1
    assert service.enqueued("sms_task") == 0


def test_a_4xx_first_answer_is_kept(tmp_path: Path) -> None:
    """An invalid request's 422 is the key's answer: the repeat gets it again, replayed."""
    service = ServiceApp(Settings(data_dir=tmp_path))
    bad = EMAIL | {"to": "not-an-email"}

    async def body(session: Session) -> list[httpx.Response]:
        return [await session.post("/notifications", "bad-one", json=bad) for _ in range(2)]

    first, again = service.run(body)
    assert first.status_code == again.status_code == 422
    assert first.json()["detail"][0]["loc"] == ["body", "email", "to"]
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_a_503_first_answer_is_not_kept(tmp_path: Path) -> None:
    """A first answer of 503 (backlog full) is not kept: the key is free again, and the retry
    with it is run and accepted once there is room."""
    service = ServiceApp(Settings(data_dir=tmp_path, task_backlog=1, task_concurrency=1))
    unblock = threading.Event()

    def hold() -> None:
        assert unblock.wait(30)

    @service.app.post("/hold")  # a task that holds its run slot until released
    async def hold_endpoint(tasks: Tasks) -> dict[str, str]:
        return {"id": tasks.add_task(hold)}

    async def body(session: Session) -> list[httpx.Response]:
        try:
            assert (await session.client.post("/hold")).status_code == 200  # runs, blocked
            await session.until(
                lambda: service.value("background_task_in_progress", task="hold") == 1,
                "the blocking task to run",
            )
            assert (await session.client.post("/hold")).status_code == 200  # fills the backlog
            refused = await session.post("/notifications", "retry-me", json=SMS)
        finally:
            unblock.set()
        await session.until(
            lambda: (
                service.value("background_task_finished_total", task="hold", outcome="success") == 2
            ),
            "the backlog to drain",
        )
        retried = await session.post("/notifications", "retry-me", json=SMS)
        again = await session.post("/notifications", "retry-me", json=SMS)
        return [refused, retried, again]

    refused, retried, again = service.run(body)
    assert refused.status_code == 503
    assert refused.json()["reason"] == "backlog_full"
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["id"] not in refused.json()["task_ids"]
    assert (again.status_code, again.json()) == (202, retried.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert service.enqueued("sms_task") == 1
    assert service.value("background_task_dropped_total", task="sms_task", reason="backlog_full")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"idempotency-key", b"")],
        [(b"idempotency-key", b"k" * 256)],
        [(b"idempotency-key", "clé".encode("latin-1"))],
        [(b"idempotency-key", b"tab\there")],
        [(b"idempotency-key", b'"quote"inside"')],
        [(b"idempotency-key", b'"dangling escape\\"')],
        [(b"idempotency-key", b"one"), (b"idempotency-key", b"two")],
    ],
    ids=["empty", "too-long", "non-ascii", "control", "bad-sf-string", "bad-escape", "twice"],
)
def test_malformed_key_is_400(tmp_path: Path, headers: list[tuple[bytes, bytes]]) -> None:
    """A key that is empty, longer than 255, not printable ASCII, a malformed quoted string or
    sent twice: 400 JSON naming the header; nothing is run."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> httpx.Response:
        return await session.client.post("/notifications", json=SMS, headers=headers)

    response = service.run(body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "Idempotency-Key" in response.json()["detail"]
    assert service.enqueued("sms_task") == 0


def test_key_syntax_limits_and_quoted_form() -> None:
    """Keys of 1 and 255 printable ASCII characters are valid; a structured-field string
    ("...") stands for its content."""
    assert parse_key([b"k"]) == "k"
    assert parse_key([b"~" * 255]) == "~" * 255
    assert parse_key([b"with space"]) == "with space"
    assert parse_key([b'"8e03978e-40d5"']) == "8e03978e-40d5"
    assert parse_key([b'"a\\"b\\\\c"']) == 'a"b\\c'
    assert parse_key([b'""']) is None


def test_requests_without_a_key_are_each_run(tmp_path: Path) -> None:
    """Without the header, identical requests are each run (as before); GET ignores the
    header."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> list[httpx.Response]:
        posts = [await session.post("/notifications", json=SMS) for _ in range(2)]
        probe = await session.client.get("/healthz", headers={"Idempotency-Key": ""})
        return [*posts, probe]

    first, second, probe = service.run(body)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert probe.status_code == 200
    assert service.enqueued("sms_task") == 2


def test_a_body_over_the_limit_is_413_and_reserves_nothing(tmp_path: Path) -> None:
    """With a key, a body over NOTIFY_MAX_BODY_BYTES is refused (413) before the key is
    reserved: the key then serves a request within the limit."""
    service = ServiceApp(Settings(data_dir=tmp_path, max_body_bytes=100))
    big = SMS | {"text": "x" * 200}

    async def body(session: Session) -> list[httpx.Response]:
        return [
            await session.post("/notifications", "sized", json=big),
            await session.post("/notifications", "sized", json=SMS),
        ]

    refused, accepted = service.run(body)
    assert refused.status_code == 413
    assert refused.json() == {"detail": "request body too large", "limit_bytes": 100}
    assert accepted.status_code == 202
    assert "idempotent-replayed" not in accepted.headers


def test_keys_and_bodies_are_not_logged(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Replays, mismatches and in-flight answers log neither the key nor the request's values."""
    service = ServiceApp(Settings(data_dir=tmp_path, log_format="json"))
    key = "secret-key-4c1d"

    async def body(session: Session) -> None:
        first = await session.post("/notifications", key, json=EMAIL)
        await session.post("/notifications", key, json=EMAIL)
        await session.post("/notifications", key, json=EMAIL | {"text": "other"})
        await session.task_finished(first.json()["id"])

    service.run(body)
    out, err = capfd.readouterr()
    assert "task.succeeded" in out  # the logs were captured
    for value in (key, "user@example.com", "hello"):
        assert value not in out + err


# --- the inline app over both stores -----------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_store(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Stores of the kind under test: in memory, or on the session's Redis (emptied first)."""
    if store_kind == "memory":
        yield MemoryIdempotencyStore
        return
    url: str = request.getfixturevalue("broker_url")
    yield lambda: RedisIdempotencyStore(url)


async def closing(*stores: Any) -> None:
    for store in stores:
        await store.close()


def test_repeat_in_flight_is_409_then_the_answer_is_replayed(make_store: Any) -> None:
    """While the first request with a key runs, a repeat gets 409 with Retry-After: 1 (the app
    is not called); once answered, repeats get that answer with its Location."""
    store = make_store()
    keyed = KeyedApp(store)
    key = {"Idempotency-Key": "in-flight"}

    async def main() -> list[httpx.Response]:
        async with keyed.client() as client:
            first = asyncio.create_task(client.post("/work?hold=true", content=b"x", headers=key))
            await asyncio.wait_for(keyed.entered.wait(), 10)
            during = await client.post("/work?hold=true", content=b"x", headers=key)
            keyed.release.set()
            answered = await first
            after = await client.post("/work?hold=true", content=b"x", headers=key)
        await closing(store)
        return [during, answered, after]

    during, answered, after = asyncio.run(main())
    assert during.status_code == 409
    assert during.headers["retry-after"] == "1"
    assert "in progress" in during.json()["detail"]
    assert (answered.status_code, answered.json()) == (201, {"run": 1, "length": 1})
    assert (after.status_code, after.json()) == (201, answered.json())
    assert after.headers["location"] == "/runs/1"
    assert after.headers["idempotent-replayed"] == "true"
    assert "x-not-replayed" not in after.headers  # only content-type, location, retry-after
    assert keyed.runs == 1


def test_5xx_answers_and_errors_release_the_key(make_store: Any) -> None:
    """A 503 answer or an exception in the app is not kept: the retry with the same key runs,
    and its answer is the one kept."""
    store = make_store()
    keyed = KeyedApp(store)

    async def main() -> list[httpx.Response]:
        async with keyed.client() as client:
            answers = [
                await client.post("/unavailable", headers={"Idempotency-Key": "u"})
                for _ in range(3)
            ]
            keyed.runs = 0
            answers += [
                await client.post("/crash", headers={"Idempotency-Key": "c"}) for _ in range(3)
            ]
        await closing(store)
        return answers

    unavailable, retried, replayed, crashed, recovered, kept = asyncio.run(main())
    assert unavailable.status_code == 503
    assert (retried.status_code, retried.json()) == (200, {"run": 2})
    assert (replayed.json(), replayed.headers["idempotent-replayed"]) == ({"run": 2}, "true")
    assert crashed.status_code == 500
    assert (recovered.status_code, recovered.json()) == (200, {"run": 2})
    assert (kept.json(), kept.headers["idempotent-replayed"]) == ({"run": 2}, "true")


def test_a_response_too_large_to_keep_is_passed_on_unkept(make_store: Any) -> None:
    """An answer over max_response_bytes reaches the client whole but is not kept: the repeat
    runs again."""
    store = make_store()
    keyed = KeyedApp(store, max_response_bytes=100)

    async def main() -> list[httpx.Response]:
        async with keyed.client() as client:
            answers = [
                await client.post("/large?size=500", headers={"Idempotency-Key": "big"})
                for _ in range(2)
            ]
        await closing(store)
        return answers

    first, second = asyncio.run(main())
    assert len(first.json()["padding"]) == 500
    assert second.json()["run"] == 2
    assert "idempotent-replayed" not in second.headers


def test_the_middleware_bounds_the_body_it_reads(make_store: Any) -> None:
    """A keyed body over max_body_bytes (declared or chunked) is 413 and the app never runs."""
    store = make_store()
    keyed = KeyedApp(store, max_body_bytes=8)

    async def chunks() -> Any:
        for part in (b"x" * 5, b"y" * 5):
            yield part

    async def main() -> list[httpx.Response]:
        async with keyed.client() as client:
            key = {"Idempotency-Key": "body"}
            answers = [
                await client.post("/work", content=b"z" * 9, headers=key),
                await client.post("/work", content=chunks(), headers=key),
                await client.post("/work", content=b"z" * 8, headers=key),
            ]
        await closing(store)
        return answers

    declared, chunked, within = asyncio.run(main())
    assert declared.status_code == chunked.status_code == 413
    assert declared.json() == {"detail": "request body too large", "limit_bytes": 8}
    assert (within.status_code, within.json()) == (201, {"run": 1, "length": 8})


# --- the stores --------------------------------------------------------------------------


def entry(body: bytes = b"{}", response: StoredResponse | None = None) -> Entry:
    scope = {"method": "POST", "path": "/notifications", "query_string": b""}
    return Entry(Fingerprint.of(scope, body), "token-" + body.hex(), response)


ANSWER = StoredResponse(202, ((b"content-type", b"application/json"),), b'{"id":"1"}')


def test_memory_store_expires_and_stays_bounded() -> None:
    """The in-memory store forgets a reservation after its lease and an answer after its TTL,
    and never holds more than its capacity (the oldest go first)."""
    now = [0.0]
    store = MemoryIdempotencyStore(capacity=2, clock=lambda: now[0])
    first = entry(b"1")

    async def main() -> None:
        assert await store.reserve("a", first, lease_seconds=10) is None
        assert await store.reserve("a", entry(b"2"), lease_seconds=10) == first
        now[0] = 10.0  # the lease is over: the key is free
        assert not await store.complete("a", Entry(first.fingerprint, first.token, ANSWER), 60)
        assert await store.reserve("a", first, lease_seconds=10) is None
        done = Entry(first.fingerprint, first.token, ANSWER)
        assert await store.complete("a", done, ttl_seconds=60)
        now[0] = 69.0
        assert await store.reserve("a", entry(b"3"), lease_seconds=10) == done
        now[0] = 70.0
        assert await store.reserve("a", entry(b"3"), lease_seconds=10) is None
        for key in ("b", "c"):
            assert await store.reserve(key, entry(key.encode()), lease_seconds=10) is None
        assert len(store) == 2
        assert await store.reserve("a", entry(b"4"), lease_seconds=10) is None  # "a" was pushed out

    asyncio.run(main())


def test_two_redis_stores_share_reservations_and_answers(broker_url: str) -> None:
    """Two Redis stores (two API processes) on one Redis: a key reserved by one is in flight for
    the other, its answer is seen by both with the TTL set, and only the holder's token can
    complete or release it."""
    one, two = RedisIdempotencyStore(broker_url), RedisIdempotencyStore(broker_url)
    mine, theirs = entry(b"mine"), entry(b"theirs")
    client = redis.Redis.from_url(broker_url)
    name = RedisIdempotencyStore.PREFIX + "k"

    async def main() -> None:
        assert await one.reserve("k", mine, lease_seconds=30) is None
        assert 0 < client.pttl(name) <= 30_000
        assert await two.reserve("k", theirs, lease_seconds=30) == mine
        assert not await two.complete("k", Entry(theirs.fingerprint, theirs.token, ANSWER), 60)
        await two.release("k", theirs)  # not the holder: nothing happens
        done = Entry(mine.fingerprint, mine.token, ANSWER)
        assert await one.complete("k", done, ttl_seconds=60)
        assert 30_000 < client.pttl(name) <= 60_000
        assert await two.reserve("k", theirs, lease_seconds=30) == done
        await one.release("k", done)  # released by its holder: gone
        assert await two.reserve("k", theirs, lease_seconds=30) is None
        await closing(one, two)

    asyncio.run(main())
    stored = client.get(name)
    assert stored is not None
    assert json.loads(stored)["response"] is None  # theirs, in flight
    client.close()


def test_two_apps_on_one_redis_share_keys(broker_url: str) -> None:
    """Two app instances on one Redis: the second replays the first's answer without running,
    and answers 409 while the first is still in flight."""
    stores = RedisIdempotencyStore(broker_url), RedisIdempotencyStore(broker_url)
    one, two = KeyedApp(stores[0]), KeyedApp(stores[1])

    async def main() -> list[httpx.Response]:
        async with one.client() as first, two.client() as second:
            held = asyncio.create_task(
                first.post("/work?hold=true", headers={"Idempotency-Key": "shared"})
            )
            await asyncio.wait_for(one.entered.wait(), 10)
            during = await second.post("/work?hold=true", headers={"Idempotency-Key": "shared"})
            one.release.set()
            answered = await held
            replayed = await second.post("/work?hold=true", headers={"Idempotency-Key": "shared"})
        await closing(*stores)
        return [during, answered, replayed]

    during, answered, replayed = asyncio.run(main())
    assert during.status_code == 409
    assert answered.status_code == 201
    assert (replayed.status_code, replayed.json()) == (201, answered.json())
    assert replayed.headers["idempotent-replayed"] == "true"
    assert (one.runs, two.runs) == (1, 0)
    client = redis.Redis.from_url(broker_url)
    digest = hashlib.sha256(b"shared").hexdigest()  # the key itself is never stored
    assert client.keys() == [(RedisIdempotencyStore.PREFIX + digest).encode()]
    client.close()


def post_keyed_once(keyed: KeyedApp, store: Any, key: str) -> httpx.Response:
    """The answer to one POST /work with ``key``, ``store`` (the app's) closed afterwards."""

    async def main() -> httpx.Response:
        async with keyed.client() as client:
            response = await client.post("/work", headers={"Idempotency-Key": key})
        await closing(store)
        return response

    return asyncio.run(main())


def test_an_unreadable_redis_entry_is_503(broker_url: str) -> None:
    """A value under the key that this store did not write is answered 503, not run."""
    client = redis.Redis.from_url(broker_url)
    digest = hashlib.sha256(b"odd").hexdigest()
    client.set(RedisIdempotencyStore.PREFIX + digest, b"not json")
    client.close()
    store = RedisIdempotencyStore(broker_url)
    keyed = KeyedApp(store)
    response = post_keyed_once(keyed, store, "odd")
    assert response.status_code == 503
    assert response.json()["reason"] == "idempotency_store_unavailable"
    assert keyed.runs == 0


def test_unreachable_redis_is_503_and_runs_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """When the Redis store can't be reached, a keyed request gets 503 JSON (reason
    idempotency_store_unavailable, Retry-After) and is not run; the failure is logged without
    the key."""
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    keyed = KeyedApp(store)
    response = post_keyed_once(keyed, store, "lost-key")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["reason"] == "idempotency_store_unavailable"
    assert keyed.runs == 0
    out, err = capfd.readouterr()
    assert EVENT_STORE_UNAVAILABLE in out + err
    assert "lost-key" not in out + err


def test_celery_service_apps_share_keys_through_redis(tmp_path: Path, broker_url: str) -> None:
    """With the Celery backend the store is Redis: a second API app replays the first's 202 (the
    same task id) and publishes nothing; the broker holds one message."""
    settings = Settings(data_dir=tmp_path, task_backend="celery", broker_url=broker_url)
    apps = [ServiceApp(settings), ServiceApp(settings)]
    for service in apps:
        (store,) = [m.kwargs["store"] for m in service.app.user_middleware if "store" in m.kwargs]
        assert isinstance(store, RedisIdempotencyStore)

    async def post(session: Session) -> httpx.Response:
        return await session.post("/notifications", "celery-key", json=SMS)

    first = apps[0].run(post)
    second = apps[1].run(post)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert (apps[0].enqueued("sms_task"), apps[1].enqueued("sms_task")) == (1, 0)
    client = redis.Redis.from_url(broker_url)
    assert client.llen("celery") == 1
    client.close()
