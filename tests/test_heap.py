"""Once started, the API and the Celery worker leave their start-up objects out of later
garbage collections (``gc.freeze``), and an in-process app gives them back when it stops."""

import asyncio
import gc
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from observability import ObservabilitySettings, instrument
from tests.support.polling import wait_until

# a started service holds far more objects than this (modules, app, metrics, tracer)
START_UP_OBJECTS = 10_000


def observed_app(**settings: Any) -> FastAPI:
    """A bare FastAPI app instrumented with ``settings``."""
    app = FastAPI()
    instrument(
        app,
        ObservabilitySettings(span_export_process=False, **settings),
        registry=CollectorRegistry(),
        tracer_provider=TracerProvider(),
    )
    return app


async def frozen_while_running(*apps: FastAPI) -> list[int]:
    """``gc.get_freeze_count()`` once each of ``apps`` has started, in order, and once each
    has stopped, in reverse order."""
    counts: list[int] = []

    async def run(remaining: tuple[FastAPI, ...]) -> None:
        if not remaining:
            return
        async with remaining[0].router.lifespan_context(remaining[0]):
            counts.append(gc.get_freeze_count())
            await run(remaining[1:])
        counts.append(gc.get_freeze_count())

    await run(apps)
    return counts


def test_an_app_freezes_start_up_objects_while_it_runs() -> None:
    """While an instrumented app runs, its start-up objects are frozen; once every app that
    froze them has stopped, none are."""
    assert gc.get_freeze_count() == 0
    first, second, after_second, after_first = asyncio.run(
        frozen_while_running(observed_app(), observed_app())
    )
    assert first > START_UP_OBJECTS and second >= first
    assert after_second > START_UP_OBJECTS  # the first app still runs
    assert after_first == 0


def test_freezing_is_a_setting() -> None:
    """With ``gc_freeze`` off, nothing is frozen."""
    assert asyncio.run(frozen_while_running(observed_app(gc_freeze=False))) == [0, 0]


def test_started_api_and_worker_report_what_they_froze(
    start_service: Any, start_worker: Any, broker_url: str
) -> None:
    """A real API and a real Celery worker log how many objects they froze once started, and
    none with ``NOTIFY_GC_FREEZE=false``."""
    worker = start_worker(NOTIFY_BROKER_URL=broker_url)
    api = start_service(NOTIFY_TASK_BACKEND="celery", NOTIFY_BROKER_URL=broker_url)
    (started,) = wait_until(lambda: worker.events("worker.started"))
    assert started["frozen_objects"] > START_UP_OBJECTS
    assert api.events("service.started")[0]["frozen_objects"] > START_UP_OBJECTS
    plain = start_service(NOTIFY_GC_FREEZE="false")
    assert plain.events("service.started")[0]["frozen_objects"] == 0
