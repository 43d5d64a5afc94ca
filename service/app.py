"""The app factory: the service's own wiring (settings, sinks, routes, request limits) on top of
``observability.instrument``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from observability import NATIVE_TELEMETRY_OFF, instrument
from service.limits import RequestLimits, RequestLimitsMiddleware
from service.notifications import NotificationService
from service.routes import build_router
from service.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the service from ``settings`` (default: the ``NOTIFY_*`` environment)."""
    settings = settings or Settings()
    notifications = NotificationService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifications.ensure_data_dir()
        try:
            yield
        finally:
            notifications.close()

    app = FastAPI(
        title="Observable notification service",
        lifespan=lifespan,
        telemetry=NATIVE_TELEMETRY_OFF,
    )
    # innermost: a refused request still has its span and metrics
    app.add_middleware(
        RequestLimitsMiddleware,
        limits=RequestLimits(
            settings.max_url_bytes, settings.max_header_bytes, settings.max_body_bytes
        ),
    )
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
