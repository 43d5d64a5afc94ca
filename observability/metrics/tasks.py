"""The contract's ``background_task_*`` metrics, and the children of one task's series."""

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from observability import names

TASK_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


_TASK = ("task", "backend")


class TaskSeries:
    """The labelled children of one task on one backend, resolved once (``labels()`` costs a
    lock and a validation per call, and a run touches a dozen series)."""

    def __init__(self, metrics: "TaskMetrics", task: str, backend: str) -> None:
        self.metrics, self.labels = metrics, (task, backend)
        self.enqueued = metrics.enqueued.labels(task, backend)
        self.started = metrics.started.labels(task, backend)
        self.queue_wait = metrics.queue_wait.labels(task, backend)
        self.in_progress = metrics.in_progress.labels(task, backend)
        self.last_started = metrics.last_started.labels(task, backend)
        self._by_outcome: dict[str, tuple[Any, Any, Any]] = {}

    def record_start(
        self, started_at: float, queue_wait: float, exemplar: dict[str, str] | None
    ) -> None:
        self.started.inc()
        self.in_progress.inc()
        self.last_started.set(started_at)
        self.queue_wait.observe(queue_wait, exemplar=exemplar)

    def record_finish(
        self,
        outcome: str,
        duration: float,
        finished_at: float,
        exemplar: dict[str, str] | None,
        *,
        live: bool = True,
    ) -> None:
        """``live``: the run was started in this process (a run reported for a dead process
        leaves the in-progress count alone: it went with that process)."""
        finished, histogram, last_finished = self.outcome(outcome)
        finished.inc()
        histogram.observe(duration, exemplar=exemplar)
        if live:
            self.in_progress.dec()
        last_finished.set(finished_at)

    def record_failure(self, error_type: str) -> None:
        self.metrics.failures.labels(*self.labels, error_type).inc()

    def outcome(self, outcome: str) -> tuple[Any, Any, Any]:
        """(finished counter, duration histogram, last-finished gauge) for ``outcome``."""
        children = self._by_outcome.get(outcome)
        if children is None:
            labels = (*self.labels, outcome)
            children = self._by_outcome[outcome] = (
                self.metrics.finished.labels(*labels),
                self.metrics.duration.labels(*labels),
                self.metrics.last_finished.labels(*labels),
            )
        return children


class TaskMetrics:
    """The contract's ``background_task_*`` metrics.

    Gauges say how they add up in prometheus-client's multiprocess mode (ignored otherwise):
    per-process state (runs in progress, capacity, an in-process backlog) is summed over live
    processes, timestamps take the latest. ``shared_queue``: the queue gauges read shared state
    (a broker queue every process polls), so the most recent reading wins instead of a sum; an
    in-process backlog's oldest entry is per process (a ``pid`` label in multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry, *, shared_queue: bool = False) -> None:
        self._series: dict[tuple[str, str], TaskSeries] = {}
        self._counters(registry)
        self._histograms(registry)
        self._gauges(registry, shared_queue)

    def _counters(self, registry: CollectorRegistry) -> None:
        task = _TASK
        self.enqueued = Counter(
            names.TASK_ENQUEUED, "Tasks accepted for running.", task, registry=registry
        )
        self.started = Counter(names.TASK_STARTED, "Task runs started.", task, registry=registry)
        self.finished = Counter(
            names.TASK_FINISHED,
            "Task runs finished, by outcome.",
            (*task, "outcome"),
            registry=registry,
        )
        self.failures = Counter(
            names.TASK_FAILURES,
            "Failed task runs, by exception class.",
            (*task, "exception"),
            registry=registry,
        )
        self.dropped = Counter(
            names.TASK_DROPPED,
            "Tasks that never ran, by reason.",
            (*task, "reason"),
            registry=registry,
        )
        self.redelivered = Counter(
            names.TASK_REDELIVERED,
            "Runs of tasks the broker delivered again (a worker died before acknowledging).",
            task,
            registry=registry,
        )
        self.refused = Counter(
            names.TASK_REFUSED,
            "Tasks refused when their request came (503), never enqueued; by reason.",
            (*task, "reason"),
            registry=registry,
        )

    def _histograms(self, registry: CollectorRegistry) -> None:
        task = _TASK
        self.queue_wait = Histogram(
            names.TASK_QUEUE_WAIT,
            "Seconds from enqueue to start.",
            task,
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            names.TASK_DURATION,
            "Seconds a run took, every outcome.",
            (*task, "outcome"),
            buckets=TASK_BUCKETS,
            registry=registry,
        )

    def _gauges(self, registry: CollectorRegistry, shared_queue: bool) -> None:
        task = _TASK
        self.in_progress = Gauge(
            names.TASK_IN_PROGRESS,
            "Task runs under way.",
            task,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            names.TASK_QUEUE_DEPTH,
            "Tasks accepted and not started yet.",
            ("backend", "queue"),
            registry=registry,
            multiprocess_mode="livemostrecent" if shared_queue else "livesum",
        )
        self.oldest_pending = Gauge(
            names.TASK_OLDEST_PENDING,
            "Enqueue time of the oldest task not started (0: none).",
            ("backend", "queue"),
            registry=registry,
            multiprocess_mode="livemostrecent" if shared_queue else "liveall",
        )
        self.capacity = Gauge(
            names.TASK_CAPACITY,
            "Task runs that may be under way at once.",
            ("backend",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.last_started = Gauge(
            names.TASK_LAST_STARTED,
            "When a run of the task last started.",
            task,
            registry=registry,
            multiprocess_mode="max",
        )
        self.last_finished = Gauge(
            names.TASK_LAST_FINISHED,
            "When a run of the task last finished, by outcome.",
            (*task, "outcome"),
            registry=registry,
            multiprocess_mode="max",
        )

    def series(self, task: str, backend: str) -> TaskSeries:
        """The cached children of ``task`` on ``backend``."""
        found = self._series.get((task, backend))
        if found is None:
            found = self._series[(task, backend)] = TaskSeries(self, task, backend)
        return found

    def declare(self, tasks: Iterable[str], backend: str, outcomes: Iterable[str]) -> None:
        """Create the series of known tasks at zero, so dashboards and alerts see them."""
        outcomes = tuple(outcomes)
        for task in tasks:
            for metric in (
                self.enqueued,
                self.started,
                self.queue_wait,
                self.in_progress,
                self.last_started,
            ):
                metric.labels(task, backend)
            for outcome in outcomes:
                for metric in (self.finished, self.duration, self.last_finished):
                    metric.labels(task, backend, outcome)
            for reason in names.DROP_REASONS:
                self.dropped.labels(task, backend, reason)
                self.refused.labels(task, backend, reason)

    def declare_queue(self, backend: str, queue: str) -> tuple[Any, Any]:
        """Create the queue gauges of a backend at zero; returns the (depth, oldest pending)
        children."""
        children = (
            self.queue_depth.labels(backend, queue),
            self.oldest_pending.labels(backend, queue),
        )
        for child in children:
            child.set(0)
        return children
