"""The app factory: ``uvicorn --factory service.main:create_app``."""

from observability import metrics_dir

# Under `uvicorn --workers N` every server process is spawned by uvicorn's supervisor, which runs
# none of our code: the first of them to import this module names the metrics directory of that
# supervisor's lifetime, before prometheus-client is imported (it picks its mode then), so that
# every scrape, whichever process answers it, returns the totals of all.
metrics_dir.claim_for_siblings("notify-api-metrics")

from collections.abc import AsyncIterator  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402

from fastapi import FastAPI, Request, Response  # noqa: E402
from opentelemetry.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from observability import multiprocess, names  # noqa: E402
from observability.dispatch import Backend, TaskReleaseMiddleware  # noqa: E402
from observability.exposition import metrics_response, serve_metrics  # noqa: E402
from observability.inprocess import InProcessBackend  # noqa: E402
from observability.journal import TaskJournal  # noqa: E402
from observability.limits import RequestLimits, RequestLimitsMiddleware  # noqa: E402
from observability.logs import configure_logging, get_logger  # noqa: E402
from observability.looplag import LoopLagMonitor  # noqa: E402
from observability.metrics import HttpMetrics, TaskMetrics, new_registry  # noqa: E402
from observability.middleware import HttpTelemetryMiddleware  # noqa: E402
from observability.redaction import redact  # noqa: E402
from observability.runner import TaskRunner  # noqa: E402
from observability.tracing import create_tracer_provider, shutdown_tracer_provider  # noqa: E402
from service.notifications import NotificationService  # noqa: E402
from service.routes import build_router  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.shutdown import GracefulShutdown  # noqa: E402

PROBE_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def build_backend(settings: Settings, runner: TaskRunner) -> Backend:
    if settings.task_backend == "celery":
        from observability.broker import CeleryBackend  # Celery is imported only when used
        from service.celery_app import CELERY_QUEUE, create_celery_app

        return CeleryBackend(runner, create_celery_app(settings), CELERY_QUEUE)
    return InProcessBackend(
        runner, concurrency=settings.task_concurrency, backlog=settings.task_backlog
    )


def multiprocess_exposition() -> CollectorRegistry | None:
    """In multiprocess mode (``uvicorn --workers N``: the directory claimed above, or
    ``PROMETHEUS_MULTIPROC_DIR`` given empty), every process serves the totals of all;
    otherwise None."""
    path = metrics_dir.configured()
    if path is None or not multiprocess.enabled():
        return None
    path.mkdir(parents=True, exist_ok=True)
    return multiprocess.exposition_registry(path)


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the service: settings, logging, metrics, tracing, backend, routes."""
    settings = settings or Settings()
    configure_logging(
        settings.log_format,
        settings.log_level,
        masking=settings.log_masking,
        access_log=settings.access_log,
    )
    registry = registry if registry is not None else new_registry()
    exposition = multiprocess_exposition() or registry
    owns_provider = tracer_provider is None
    provider = tracer_provider or create_tracer_provider(
        settings.service_name,
        registry,
        export_process=settings.span_export_process,
        log_format=settings.log_format,
        log_level=settings.log_level,
    )
    loop_lag = LoopLagMonitor(registry)

    notifications = NotificationService(settings.data_dir)
    task_metrics = TaskMetrics(registry, shared_queue=settings.task_backend == "celery")
    journal = TaskJournal(settings.task_history_size)
    runner = TaskRunner(
        backend=settings.task_backend,
        metrics=task_metrics,
        tracer_provider=provider,
        timeout=settings.task_timeout_seconds,
        journal=journal,
        failure_sink=notifications.report_failure,
        lifecycle_events=settings.log_task_lifecycle,
    )
    task_metrics.declare(notifications.tasks(), settings.task_backend, names.OUTCOMES)
    backend = build_backend(settings, runner)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifications.ensure_data_dir()
        metrics_server = (
            serve_metrics(settings.metrics_port, exposition) if settings.metrics_port else None
        )
        loop_lag.start()
        await backend.start()
        shutdown = GracefulShutdown(backend, settings.shutdown_grace_seconds)
        shutdown.install()
        get_logger("service").info(
            "service.started",
            backend=backend.name,
            concurrency=settings.task_concurrency,
            backlog=settings.task_backlog,
        )
        try:
            yield
        finally:
            shutdown.uninstall()
            await backend.drain(shutdown.remaining_grace())
            get_logger("service").info("service.stopped")
            await loop_lag.stop()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            if owns_provider:
                shutdown_tracer_provider(provider)

    # FastAPI's own OpenTelemetry support would add a second server span (with the raw path
    # and query, e-mail addresses included) whenever a global provider exists: ours replaces it.
    app = FastAPI(
        title="Observable notification service",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.notifications = notifications
    app.state.task_backend = backend
    app.state.task_journal = journal
    app.include_router(build_router(settings, notifications))

    if not settings.metrics_port:  # otherwise /metrics is served on its own port only

        @app.get("/metrics", include_in_schema=False)
        def metrics(request: Request) -> Response:
            return metrics_response(request, exposition, settings.metrics_token.get_secret_value())

    app.add_middleware(
        RequestLimitsMiddleware,
        limits=RequestLimits(
            settings.max_url_bytes, settings.max_header_bytes, settings.max_body_bytes
        ),
    )
    app.add_middleware(TaskReleaseMiddleware)
    app.add_middleware(
        HttpTelemetryMiddleware,
        metrics=HttpMetrics(registry),
        tracer_provider=provider,
        excluded_paths=PROBE_PATHS,
        mask=redact if settings.log_masking else str,
    )
    return app
