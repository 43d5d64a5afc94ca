"""``instrument(app, settings)``: one call that wires logging, metrics, tracing, the task
backend and the middlewares into a FastAPI app, and returns the ``Telemetry`` it built."""

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from observability import heap, names
from observability.delivery import DeliveryRecorder
from observability.http.telemetry import HttpTelemetryMiddleware
from observability.logs.access_log import AccessLog
from observability.logs.configuration import configure_logging, get_logger
from observability.logs.redaction import mask_address, redact, redact_query_string
from observability.metrics import directory, multiprocess
from observability.metrics.delivery import DeliveryMetrics
from observability.metrics.exposition import metrics_response, serve_metrics
from observability.metrics.http import HttpMetrics
from observability.metrics.loop_lag import LoopLagMonitor
from observability.metrics.registry import new_registry
from observability.metrics.tasks import TaskMetrics
from observability.settings import ObservabilitySettings, retry_policy
from observability.shutdown import GracefulShutdown
from observability.tasks.backend import Backend
from observability.tasks.failure import FailureSink
from observability.tasks.function import TaskFunction
from observability.tasks.journal import TaskJournal, TaskState
from observability.tasks.recorder import Recorder
from observability.tasks.route import TaskMiddleware, TaskRoute
from observability.tracing.provider import create_tracer_provider, shutdown_tracer_provider

PROBE_PATHS = ("/metrics", "/healthz", "/readyz")


class Telemetry:
    """What ``instrument`` built for one app: its registry, tracer provider, task recorder and
    backend, and the journal of recent tasks."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        registry: CollectorRegistry,
        tracer_provider: TracerProvider | None,
        tasks: Mapping[str, TaskFunction],
        failure_sink: FailureSink | None,
        delivery_channels: Iterable[str] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.exposition = _multiprocess_exposition() or registry
        self.owns_provider = tracer_provider is None
        self.tracer_provider = tracer_provider or create_tracer_provider(
            settings.service_name,
            registry,
            export_process=settings.span_export_process,
            log_format=settings.log_format,
            log_level=settings.log_level,
        )
        self.loop_lag = LoopLagMonitor(registry)
        self.journal = TaskJournal(settings.task_history_size)
        metrics = TaskMetrics(registry, shared_queue=settings.task_backend == "celery")
        delivery_metrics = DeliveryMetrics(registry)
        delivery_metrics.declare(delivery_channels)
        self.recorder = Recorder(
            backend=settings.task_backend,
            metrics=metrics,
            tracer_provider=self.tracer_provider,
            timeout=settings.task_timeout_seconds,
            journal=self.journal,
            failure_sink=failure_sink,
            lifecycle_events=settings.log_task_lifecycle,
            delivery=DeliveryRecorder(delivery_metrics, self.tracer_provider),
        )
        metrics.declare(tasks, settings.task_backend, (*names.OUTCOMES, names.OUTCOME_RETRY))
        self.backend = _backend(settings, self.recorder)

    def ready(self) -> bool:
        """Whether tasks can be accepted (the backend is running and reachable)."""
        return self.backend.ready()

    async def task_status(self, task_id: str) -> dict[str, Any] | None:
        """State and timestamps of a recent task (this process's journal, and what the
        backend's workers reported of a task still queued here), or None if unknown."""
        record = self.journal.get(task_id)
        found = record.as_dict() if record is not None else {}
        if found.get("state") in (None, TaskState.QUEUED):
            found |= await self.backend.lookup(task_id) or {}
        return {"id": task_id} | found if found else None

    def metrics_response(self, request: Request) -> Response:
        token = self.settings.metrics_token.get_secret_value()
        return metrics_response(request, self.exposition, token)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan part: the backend runs, SIGTERM drains it, the end flushes."""
        settings = self.settings
        port = settings.metrics_port
        metrics_server = serve_metrics(port, self.exposition) if port else None
        self.loop_lag.start()
        await self.backend.start()
        shutdown = GracefulShutdown(self.backend, settings.shutdown_grace_seconds)
        shutdown.install()
        frozen = heap.freeze() if settings.gc_freeze else 0
        log = get_logger("service")
        log.info(
            names.EVENT_SERVICE_STARTED,
            backend=self.backend.name,
            concurrency=settings.task_concurrency,
            backlog=settings.task_backlog,
            frozen_objects=frozen,
        )
        try:
            yield
        finally:
            if settings.gc_freeze:
                heap.thaw()
            shutdown.uninstall()
            await self.backend.drain(shutdown.remaining_grace())
            log.info(names.EVENT_SERVICE_STOPPED)
            await self.loop_lag.stop()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            if self.owns_provider:
                shutdown_tracer_provider(self.tracer_provider)


def instrument(
    app: FastAPI,
    settings: ObservabilitySettings,
    *,
    tasks: Mapping[str, TaskFunction] | None = None,
    failure_sink: FailureSink | None = None,
    delivery_channels: Iterable[str] = (),
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    excluded_paths: Iterable[str] = PROBE_PATHS,
) -> Telemetry:
    """Instrument ``app``: routes declared on it afterwards admit their ``Tasks`` (routers of
    their own take ``route_class=TaskRoute``); ``tasks`` (by name) have their series at zero
    from the start, and so have the ``delivery_channels`` the tasks send through (see
    ``observability.delivery``); ``failure_sink`` gets every run that did not succeed.
    Middlewares added before this call run inside the request's span and metrics."""
    configure_logging(
        settings.log_format,
        settings.log_level,
        masking=settings.log_masking,
        message_key=settings.log_message_key,
    )
    registry = registry if registry is not None else new_registry()
    telemetry = Telemetry(
        settings, registry, tracer_provider, tasks or {}, failure_sink, delivery_channels
    )
    _wrap_lifespan(app, telemetry.running)
    app.router.route_class = TaskRoute
    if not settings.metrics_port:  # otherwise /metrics is served on its own port only
        app.add_api_route(
            "/metrics", telemetry.metrics_response, methods=["GET"], include_in_schema=False
        )
    app.add_middleware(TaskMiddleware, backend=telemetry.backend)
    app.add_middleware(
        HttpTelemetryMiddleware,
        metrics=HttpMetrics(registry),
        tracer_provider=telemetry.tracer_provider,
        excluded_paths=excluded_paths,
        mask=redact if settings.log_masking else str,
        mask_query=redact_query_string if settings.log_masking else str,
        mask_address=mask_address if settings.log_masking else str,
        access_log=AccessLog() if settings.access_log else None,
    )
    return telemetry


def _wrap_lifespan(app: FastAPI, outer: Callable[[], AbstractAsyncContextManager[None]]) -> None:
    """Run ``outer`` around the app's own lifespan."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with outer(), inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan


def _backend(settings: ObservabilitySettings, recorder: Recorder) -> Backend:
    if settings.task_backend == "celery":
        # Celery is imported only when used
        from observability.backends.celery_app import CELERY_QUEUE, create_celery_app
        from observability.backends.celery_publisher import CeleryBackend

        return CeleryBackend(recorder, create_celery_app(settings), CELERY_QUEUE)
    from observability.backends.inprocess import InProcessBackend

    return InProcessBackend(
        recorder,
        concurrency=settings.task_concurrency,
        backlog=settings.task_backlog,
        timeout=settings.task_timeout_seconds,
        retry=retry_policy(settings),
    )


def _multiprocess_exposition() -> CollectorRegistry | None:
    """In multiprocess mode (``uvicorn --workers N``: the directory claimed by
    ``claim_for_siblings``, or ``PROMETHEUS_MULTIPROC_DIR`` given), every process serves the
    totals of all; otherwise None."""
    path = directory.configured()
    if path is None or not multiprocess.enabled():
        return None
    path.mkdir(parents=True, exist_ok=True)
    return multiprocess.exposition_registry(path)
