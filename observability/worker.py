"""The Celery worker hook: ``instrument_worker`` makes a Celery app's worker run tasks through
the recorder (metrics of every process merged on one port, spans continuing the publishing
request's trace, log lines, retries, time limits).

This module imports only the standard library and the metrics directory at its top: a worker
process must claim its multiprocess metrics directory before anything imports
``prometheus_client``, so import it (and call ``instrument_worker``) first."""

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from observability.metrics import directory

if TYPE_CHECKING:
    from celery import Celery

    from observability.backends.worker_process import WorkerProcess
    from observability.settings import ObservabilitySettings
    from observability.tasks.failure import FailureSink
    from observability.tasks.function import TaskFunction


def instrument_worker(
    app: "Celery",
    settings: "ObservabilitySettings",
    tasks: Mapping[str, "TaskFunction"],
    *,
    service_name: str | None = None,
    failure_sink: "FailureSink | None" = None,
    prepare: Callable[[], None] | None = None,
    delivery_channels: Iterable[str] = (),
) -> "WorkerProcess":
    """Register the task that runs ``tasks`` (by name, as the API's ``Tasks`` publishes them)
    on ``app`` and connect the worker's signals. Call it at import time of the module named by
    ``celery -A``. ``service_name``: the worker's ``service.name`` unless ``OTEL_SERVICE_NAME``
    or ``OTEL_RESOURCE_ATTRIBUTES`` sets one; by default the settings' ``service_name`` plus
    ``-worker``."""
    metrics_dir = directory.claim("notify-worker-metrics")
    from observability.backends.celery_worker import register_run_task
    from observability.backends.worker_process import WorkerProcess, cache_pid_for_metrics
    from observability.logs.worker_output import connect_worker_output

    cache_pid_for_metrics()
    worker = WorkerProcess(
        settings,
        tasks,
        metrics_dir,
        service_name=service_name or f"{settings.service_name}-worker",
        failure_sink=failure_sink,
        prepare=prepare,
        delivery_channels=delivery_channels,
    )
    register_run_task(
        app,
        worker.runtime,
        max_retries=settings.task_max_retries,
        task_names=tasks,
    )
    _connect_signals(worker)
    connect_worker_output(app, settings.log_format, worker.configure_logging)
    return worker


def _connect_signals(worker: "WorkerProcess") -> None:
    from celery import signals
    from celery.exceptions import TimeLimitExceeded

    def setup_logging(**_: Any) -> None:
        worker.configure_logging()

    def worker_init(sender: Any = None, **_: Any) -> None:
        """``sender``: Celery's WorkController, with the pool and concurrency the command line
        chose."""
        concurrency = getattr(sender, "concurrency", None)
        if not isinstance(concurrency, int) or concurrency < 1:
            concurrency = worker.settings.task_concurrency
        pool = getattr(sender, "pool_cls", None) or worker.settings.worker_pool
        worker.start(concurrency, pool if isinstance(pool, str) else pool.__module__)

    def task_failure(exception: BaseException | None = None, args: Any = None, **_: Any) -> None:
        """In the main process, a run killed at Celery's hard time limit (its child is gone)."""
        if isinstance(exception, TimeLimitExceeded) and args:
            worker.killed_at_hard_limit(args[0], exception)

    signals.setup_logging.connect(setup_logging, weak=False)
    signals.worker_init.connect(worker_init, weak=False)
    signals.worker_process_init.connect(lambda **_: worker.child_started(), weak=False)
    signals.worker_process_shutdown.connect(lambda **_: worker.child_stopping(), weak=False)
    signals.worker_shutdown.connect(lambda **_: worker.shutdown(), weak=False)
    signals.task_failure.connect(task_failure, weak=False)
