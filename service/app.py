"""The app factory: the service's own wiring (settings, sinks, routes, request limits) on top of
``observability.instrument``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from observability import NATIVE_TELEMETRY_OFF, instrument
from observability.metrics import directory
from service.idempotency import (
    IdempotencyMiddleware,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
)
from service.limits import RequestLimits, RequestLimitsMiddleware
from service.notifications import NotificationService
from service.responses import validation_error_handler
from service.routes import build_router
from service.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    idempotency_store: IdempotencyStore | None = None,
) -> FastAPI:
    """Build the service from ``settings`` (default: the ``NOTIFY_*`` environment). The
    ``Idempotency-Key`` store is Redis (the broker's) when several API processes answer, so that
    every one sees the keys, else this process's memory; ``idempotency_store`` overrides it."""
    settings = settings or Settings()
    notifications = NotificationService(settings)
    keys = idempotency_store or _idempotency_store(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifications.ensure_data_dir()
        try:
            yield
        finally:
            notifications.close()
            await keys.close()

    app = FastAPI(
        title="Observable notification service",
        lifespan=lifespan,
        telemetry=NATIVE_TELEMETRY_OFF,
    )
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    _add_request_guards(app, settings, keys)
    telemetry = instrument(
        app,
        settings,
        tasks=notifications.tasks(),
        failure_sink=notifications.report_failure,
        delivery_channels=settings.delivery_channels(),
        registry=registry,
        tracer_provider=tracer_provider,
    )
    app.include_router(build_router(settings, notifications, telemetry))
    return app


def _add_request_guards(app: FastAPI, settings: Settings, keys: IdempotencyStore) -> None:
    """Before ``instrument``, so that they run inside the request's span and metrics (a refused
    or replayed request is still measured); the key is honoured inside the size limits (the
    body it reads to fingerprint is bounded)."""
    app.add_middleware(
        IdempotencyMiddleware,
        store=keys,
        ttl_seconds=settings.idempotency_ttl_seconds,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(
        RequestLimitsMiddleware,
        limits=RequestLimits(
            settings.max_url_bytes, settings.max_header_bytes, settings.max_body_bytes
        ),
    )


def _idempotency_store(settings: Settings) -> IdempotencyStore:
    """Redis (``NOTIFY_BROKER_URL``) when several API processes answer (the Celery backend, or
    ``uvicorn --workers N``: a multiprocess metrics directory), else this process's memory."""
    if settings.task_backend == "celery" or directory.configured() is not None:
        return RedisIdempotencyStore(settings.broker_url)
    return MemoryIdempotencyStore()
