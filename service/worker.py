"""The Celery app: ``celery -A service.worker worker``.

The worker uses a thread pool by default (``worker_pool = "threads"``), so one process serves
its ``/metrics`` on ``NOTIFY_WORKER_METRICS_PORT``; scale out with more worker processes."""

from typing import Any

from celery import Celery, signals
from opentelemetry.trace import SpanKind
from prometheus_client import start_http_server

from observability import names
from observability.broker import WorkerRuntime, register_run_task
from observability.logs import configure_logging, get_logger
from observability.metrics import TaskMetrics, new_registry
from observability.runner import TaskFunction, TaskRunner
from observability.tracing import create_tracer_provider, shutdown_tracer_provider
from service.notifications import NotificationService
from service.settings import Settings

CELERY_QUEUE = "celery"


def create_celery_app(settings: Settings) -> Celery:
    """The Celery app shared by the API (publisher) and the workers."""
    app = Celery("notification_service", broker=settings.broker_url)
    app.conf.update(
        task_default_queue=CELERY_QUEUE,
        task_acks_late=True,
        result_backend=settings.broker_url,
        result_expires=24 * 3600,
        redis_socket_connect_timeout=2,
        redis_socket_timeout=5,
        result_backend_transport_options={"retry_policy": {"max_retries": 1}},
        task_track_started=True,
        worker_pool="threads",
        worker_concurrency=settings.task_concurrency,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_transport_options={"socket_connect_timeout": 2, "socket_timeout": 5},
    )
    return app


class Worker:
    """A worker process's runtime: settings, metrics server, tracer, runner, task table."""

    def __init__(self) -> None:
        self.settings = Settings()
        self._runtime: WorkerRuntime | None = None

    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = self._build()
        return self._runtime

    def _build(self) -> WorkerRuntime:
        settings = self.settings
        configure_logging(settings.log_format, settings.log_level)
        self.provider = create_tracer_provider("notification-worker")
        metrics = TaskMetrics(registry := new_registry())
        service = NotificationService(settings.data_dir)
        service.ensure_data_dir()
        runner = TaskRunner(
            backend="celery",
            metrics=metrics,
            tracer_provider=self.provider,
            timeout=settings.task_timeout_seconds,
            failure_sink=service.report_failure,
            span_kind=SpanKind.CONSUMER,
        )
        tasks = service.tasks()
        metrics.declare(tasks, "celery", (*names.OUTCOMES, names.OUTCOME_RETRY))
        metrics.capacity.labels("celery").set(settings.task_concurrency)
        if settings.worker_metrics_port:
            start_http_server(settings.worker_metrics_port, registry=registry)
        get_logger("service.worker").info(
            "worker.started",
            metrics_port=settings.worker_metrics_port,
            concurrency=settings.task_concurrency,
        )

        def resolve(name: str) -> TaskFunction:
            if name not in tasks:
                raise LookupError(f"unknown task {name!r}")
            return tasks[name]

        return WorkerRuntime(runner, resolve)

    def shutdown(self) -> None:
        if self._runtime is not None:
            shutdown_tracer_provider(self.provider)


worker = Worker()
app = create_celery_app(worker.settings)
register_run_task(
    app,
    worker.runtime,
    max_retries=worker.settings.task_max_retries,
    backoff=worker.settings.task_retry_backoff_seconds,
)


def _setup_logging(**_: Any) -> None:
    configure_logging(worker.settings.log_format, worker.settings.log_level)


def _worker_init(**_: Any) -> None:
    worker.runtime()


def _worker_shutdown(**_: Any) -> None:
    worker.shutdown()


signals.setup_logging.connect(_setup_logging, weak=False)
signals.worker_init.connect(_worker_init, weak=False)
signals.worker_shutdown.connect(_worker_shutdown, weak=False)
