"""A Celery worker's processes: the main process starts the merged ``/metrics`` server and
reports runs killed at the hard time limit; whichever process runs tasks (a prefork child, or
the main process with threads) builds its tracer, recorder and runtime on first use."""

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from celery.exceptions import TimeLimitExceeded
from opentelemetry.trace import SpanKind, TracerProvider
from prometheus_client import CollectorRegistry, values

from observability import heap, names
from observability.backends.celery_app import CELERY_QUEUE
from observability.backends.celery_message import envelope_from_message
from observability.backends.celery_worker import WorkerRuntime
from observability.delivery import DeliveryRecorder
from observability.logs.configuration import configure_logging, get_logger
from observability.metrics import directory, multiprocess
from observability.metrics.delivery import DeliveryMetrics
from observability.metrics.exposition import serve_metrics
from observability.metrics.tasks import TaskMetrics
from observability.settings import ObservabilitySettings, retry_policy
from observability.tasks.failure import FailureSink
from observability.tasks.function import TaskFunction
from observability.tasks.recorder import Recorder
from observability.tasks.timeout import HardTimeLimitExceeded
from observability.tracing.destination import Destination
from observability.tracing.provider import create_tracer_provider, shutdown_tracer_provider

BACKEND = "celery"
_KILLED_REMEMBERED = 1000
_pid = [os.getpid()]


def cache_pid_for_metrics() -> None:
    """prometheus-client's multiprocess values ask the OS for the pid at every update, to notice
    a fork (a system call each: 11-13 a run). Make them read this process's pid from memory
    instead, updated in a forked child before anything runs there. Call it right after claiming
    the metrics directory, before any metric is created (values created before keep their
    class, and two classes must not share a file)."""
    if multiprocess.enabled():
        values.ValueClass = values.MultiProcessValue(process_identifier=_current_pid)  # type: ignore[no-untyped-call]


def _current_pid() -> int:
    return _pid[0]


def _forked() -> None:
    _pid[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


class WorkerProcess:
    """``tasks``: the task table by name; ``service_name``: of the worker's spans (unless
    ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` says otherwise); ``failure_sink``
    gets every run that did not succeed; ``prepare`` runs in each process before its first task
    (e.g. creating a data folder)."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        tasks: Mapping[str, TaskFunction],
        metrics_dir: Path,
        *,
        service_name: str,
        failure_sink: FailureSink | None = None,
        prepare: Callable[[], None] | None = None,
        delivery_channels: Iterable[str] = (),
    ) -> None:
        self.delivery_channels = tuple(delivery_channels)
        self.settings = settings
        self.service_name = service_name
        self.tasks = dict(tasks)
        self.metrics_dir = metrics_dir
        self.failure_sink = failure_sink
        self.prepare = prepare
        self.registry = CollectorRegistry()  # values go to the multiprocess files
        self.celery_time_limits = False
        self._metrics: TaskMetrics | None = None
        self._delivery_metrics: DeliveryMetrics | None = None
        self._killed: set[str] = set()
        self._runtime: WorkerRuntime | None = None
        self._provider: TracerProvider | None = None

    def configure_logging(self) -> None:
        settings = self.settings
        configure_logging(
            settings.log_format,
            settings.log_level,
            masking=settings.log_masking,
            message_key=settings.log_message_key,
        )

    def start(self, concurrency: int, pool: str) -> None:
        """In the main process, before the pool starts: a clean metrics directory, the series of
        known tasks at zero, the capacity and the ``/metrics`` server. Runs are bounded by
        Celery's time limits under prefork, by the runtime otherwise (threads ignore them)."""
        self.celery_time_limits = "prefork" in pool or pool == "processes"
        self.configure_logging()
        if not multiprocess.enabled():
            raise RuntimeError(
                "prometheus_client was imported before the worker claimed "
                f"{directory.ENV}: worker metrics would not add up across processes"
            )
        directory.reset(self.metrics_dir)
        metrics = self.task_metrics()
        metrics.declare(self.tasks, BACKEND, (*names.OUTCOMES, names.OUTCOME_RETRY))
        for task in self.tasks:
            metrics.redelivered.labels(task, BACKEND)
        metrics.capacity.labels(BACKEND).set(concurrency)
        self.delivery_metrics().declare(self.delivery_channels)
        port = self.settings.worker_metrics_port
        if port:
            serve_metrics(port, multiprocess.exposition_registry(self.metrics_dir))
        frozen = heap.freeze() if self.settings.gc_freeze else 0  # the pool's children inherit it
        get_logger("observability.worker").info(
            names.EVENT_WORKER_STARTED,
            metrics_port=port,
            concurrency=concurrency,
            pool=pool,
            frozen_objects=frozen,
        )

    def task_metrics(self) -> TaskMetrics:
        """The worker's metrics, created once (values go to the multiprocess files)."""
        if self._metrics is None:
            self._metrics = TaskMetrics(self.registry)
        return self._metrics

    def delivery_metrics(self) -> DeliveryMetrics:
        if self._delivery_metrics is None:
            self._delivery_metrics = DeliveryMetrics(self.registry)
        return self._delivery_metrics

    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = self._build()
        return self._runtime

    def _build(self) -> WorkerRuntime:
        settings = self.settings
        self.configure_logging()
        self._provider = create_tracer_provider(self.service_name, self.registry)
        if self.prepare is not None:
            self.prepare()
        recorder = Recorder(
            backend=BACKEND,
            metrics=self.task_metrics(),
            tracer_provider=self._provider,
            timeout=settings.task_timeout_seconds,
            failure_sink=self.failure_sink,
            span_kind=SpanKind.CONSUMER,
            link_parent=settings.celery_trace_mode == "link",
            consumes=Destination.of(settings.broker_url, CELERY_QUEUE),
            lifecycle_events=settings.log_task_lifecycle,
            delivery=DeliveryRecorder(self.delivery_metrics(), self._provider),
        )
        runtime = WorkerRuntime(
            recorder,
            self._resolve,
            timeout=settings.task_timeout_seconds,
            retry=retry_policy(settings),
            celery_time_limits=self.celery_time_limits,
        )
        if settings.gc_freeze:
            heap.freeze()  # this process's runtime joins what it inherited
        return runtime

    def _resolve(self, name: str) -> TaskFunction:
        if name not in self.tasks:
            raise LookupError(f"unknown task {name!r}")
        return self.tasks[name]

    def killed_at_hard_limit(self, payload: dict[str, Any], error: TimeLimitExceeded) -> None:
        """Report a run Celery killed at its hard time limit as ``timeout``."""
        envelope = envelope_from_message(payload)
        if envelope.id in self._killed:  # Celery signals the failure twice
            return
        if len(self._killed) > _KILLED_REMEMBERED:
            self._killed.clear()
        self._killed.add(envelope.id)
        limit = float(error.args[0]) if error.args else self.settings.task_timeout_seconds
        killed = HardTimeLimitExceeded(f"task killed at its {limit:g}s hard time limit")
        self.runtime().recorder.killed(envelope, limit, killed)

    def child_started(self) -> None:
        """In a new prefork child: build a runtime of its own (the parent's, if the parent made
        one to report a hard time limit, has a tracer whose export thread stayed behind)."""
        self._runtime, self._provider = None, None

    def child_stopping(self) -> None:
        """A prefork child exits: flush its spans, its live gauges stop counting."""
        self._stop_tracing()
        multiprocess.process_exited(self.metrics_dir)

    def shutdown(self) -> None:
        """The main process exits."""
        self._stop_tracing()
        directory.remove(self.metrics_dir)

    def _stop_tracing(self) -> None:
        if self._provider is not None:
            shutdown_tracer_provider(self._provider)
            self._provider = None
