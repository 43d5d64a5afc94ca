"""The Celery worker: ``celery -A service.worker worker``.

The default pool is prefork (``NOTIFY_WORKER_POOL``): ``NOTIFY_TASK_CONCURRENCY`` child
processes, so Celery's time limits work and CPU-bound tasks use several cores. Every process
writes its metrics to a directory private to this worker start (prometheus-client multiprocess
mode) and the main process serves them all, merged, on ``NOTIFY_WORKER_METRICS_PORT``."""

from observability import metrics_dir

# prometheus-client picks its multiprocess mode when first imported: claim the directory first.
METRICS_DIR = metrics_dir.claim("notify-worker-metrics")

from typing import Any  # noqa: E402

from celery import signals  # noqa: E402
from celery.exceptions import TimeLimitExceeded  # noqa: E402
from opentelemetry.trace import SpanKind, TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402

from observability import multiprocess, names  # noqa: E402
from observability.broker import (  # noqa: E402
    HardTimeLimitExceeded,
    WorkerRuntime,
    envelope_from_message,
    register_run_task,
)
from observability.logs import configure_logging, get_logger  # noqa: E402
from observability.metrics import TaskMetrics  # noqa: E402
from observability.runner import TaskFunction, TaskRunner  # noqa: E402
from observability.tracing import create_tracer_provider, shutdown_tracer_provider  # noqa: E402
from service.celery_app import create_celery_app  # noqa: E402
from service.notifications import NotificationService  # noqa: E402
from service.settings import Settings  # noqa: E402


class Worker:
    """A worker's runtime. The main process starts the metrics server (``start``); whichever
    process runs tasks (a prefork child, or the main process with threads) builds its tracer
    and runner on first use (``runtime``)."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.metrics: TaskMetrics | None = None
        self.registry = CollectorRegistry()  # values go to the multiprocess files
        self.celery_time_limits = False
        self._killed: set[str] = set()
        self._runtime: WorkerRuntime | None = None
        self._provider: TracerProvider | None = None

    def start(self, concurrency: int, pool: str) -> None:
        """In the main process, before the pool starts: a clean metrics directory, the series of
        known tasks at zero, the capacity and the ``/metrics`` server. Runs are bounded by
        Celery's time limits under prefork, by the runner otherwise (threads ignore them)."""
        settings = self.settings
        self.celery_time_limits = "prefork" in pool or pool == "processes"
        configure_logging(settings.log_format, settings.log_level, masking=settings.log_masking)
        if not multiprocess.enabled():
            raise RuntimeError(
                "prometheus_client was imported before service.worker set "
                f"{metrics_dir.ENV}: worker metrics would not add up across processes"
            )
        metrics_dir.reset(METRICS_DIR)
        metrics = self.task_metrics()
        metrics.declare(self._service().tasks(), "celery", (*names.OUTCOMES, names.OUTCOME_RETRY))
        for task in self._service().tasks():
            metrics.redelivered.labels(task, "celery")
        metrics.capacity.labels("celery").set(concurrency)
        if settings.worker_metrics_port:
            start_http_server(
                settings.worker_metrics_port,
                registry=multiprocess.exposition_registry(METRICS_DIR),
            )
        get_logger("service.worker").info(
            "worker.started",
            metrics_port=settings.worker_metrics_port,
            concurrency=concurrency,
            pool=pool,
        )

    def task_metrics(self) -> TaskMetrics:
        """The worker's metrics, created once (values go to the multiprocess files)."""
        if self.metrics is None:
            self.metrics = TaskMetrics(self.registry)
        return self.metrics

    def _service(self) -> NotificationService:
        return NotificationService(self.settings.data_dir)

    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = self._build()
        return self._runtime

    def _build(self) -> WorkerRuntime:
        settings = self.settings
        configure_logging(settings.log_format, settings.log_level, masking=settings.log_masking)
        self._provider = create_tracer_provider("notification-worker", self.registry)
        service = self._service()
        service.ensure_data_dir()
        runner = TaskRunner(
            backend="celery",
            metrics=self.task_metrics(),
            tracer_provider=self._provider,
            timeout=settings.task_timeout_seconds,
            failure_sink=service.report_failure,
            span_kind=SpanKind.CONSUMER,
            link_parent=settings.celery_trace_mode == "link",
            lifecycle_events=settings.log_task_lifecycle,
        )
        tasks = service.tasks()

        def resolve(name: str) -> TaskFunction:
            if name not in tasks:
                raise LookupError(f"unknown task {name!r}")
            return tasks[name]

        return WorkerRuntime(runner, resolve, celery_time_limits=self.celery_time_limits)

    def killed_at_hard_limit(self, payload: dict[str, Any], error: TimeLimitExceeded) -> None:
        """Report a run Celery killed at its hard time limit as ``timeout``."""
        envelope = envelope_from_message(payload)
        if envelope.id in self._killed:  # Celery signals the failure twice
            return
        if len(self._killed) > 1000:
            self._killed.clear()
        self._killed.add(envelope.id)
        limit = float(error.args[0]) if error.args else self.settings.task_timeout_seconds
        killed = HardTimeLimitExceeded(f"task killed at its {limit:g}s hard time limit")
        self.runtime().runner.report_killed(envelope, limit, killed)

    def child_started(self) -> None:
        """In a new prefork child: build a runtime of its own (the parent's, if the parent made
        one to report a hard time limit, has a tracer whose export thread stayed behind)."""
        self._runtime, self._provider = None, None

    def child_stopping(self) -> None:
        """A prefork child exits: flush its spans, its live gauges stop counting."""
        self._stop_tracing()
        multiprocess.process_exited(METRICS_DIR)

    def shutdown(self) -> None:
        """The main process exits."""
        self._stop_tracing()
        metrics_dir.remove(METRICS_DIR)

    def _stop_tracing(self) -> None:
        if self._provider is not None:
            shutdown_tracer_provider(self._provider)
            self._provider = None


worker = Worker()
app = create_celery_app(worker.settings)
register_run_task(
    app,
    worker.runtime,
    max_retries=worker.settings.task_max_retries,
    backoff=worker.settings.task_retry_backoff_seconds,
)


def _setup_logging(**_: Any) -> None:
    configure_logging(
        worker.settings.log_format, worker.settings.log_level, masking=worker.settings.log_masking
    )


def _worker_init(sender: Any = None, **_: Any) -> None:
    """``sender``: Celery's WorkController, with the pool and concurrency the command line chose."""
    concurrency = getattr(sender, "concurrency", None)
    if not isinstance(concurrency, int) or concurrency < 1:
        concurrency = worker.settings.task_concurrency
    pool = getattr(sender, "pool_cls", None) or worker.settings.worker_pool
    worker.start(concurrency, pool if isinstance(pool, str) else pool.__module__)


def _process_shutdown(**_: Any) -> None:
    worker.child_stopping()


def _process_init(**_: Any) -> None:
    worker.child_started()


def _task_failure(exception: BaseException | None = None, args: Any = None, **_: Any) -> None:
    """In the main process, a run killed at Celery's hard time limit (its child is gone)."""
    if isinstance(exception, TimeLimitExceeded) and args:
        worker.killed_at_hard_limit(args[0], exception)


def _worker_shutdown(**_: Any) -> None:
    worker.shutdown()


signals.setup_logging.connect(_setup_logging, weak=False)
signals.worker_init.connect(_worker_init, weak=False)
signals.worker_process_init.connect(_process_init, weak=False)
signals.worker_process_shutdown.connect(_process_shutdown, weak=False)
signals.worker_shutdown.connect(_worker_shutdown, weak=False)
signals.task_failure.connect(_task_failure, weak=False)
