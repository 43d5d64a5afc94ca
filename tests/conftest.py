"""Fixtures of the whole suite: real service and worker processes, a Redis of the session's
own, a real OTLP/HTTP receiver. The helpers behind them live in tests/support/."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.otlp import OtlpReceiver
from tests.support.processes import (
    FaultyServiceProcess,
    ServiceProcess,
    WorkerProcess,
    ephemeral_redis,
    start_processes,
)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start service processes (``start_service(**env)``); all are stopped at teardown."""
    yield from start_processes(ServiceProcess, tmp_path)


@pytest.fixture
def start_faulty_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start the service with deliberately bad tasks (tests/support/faulty_app.py)."""
    yield from start_processes(FaultyServiceProcess, tmp_path)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start Celery worker processes (``start_worker(**env)``); stopped at teardown."""
    yield from start_processes(WorkerProcess, tmp_path)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test session's own (never a Redis someone else uses)."""
    with ephemeral_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    """The session's own Redis, emptied for each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()
