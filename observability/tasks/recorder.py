"""The recorder: every lifecycle event of a task, whatever the backend, becomes its metrics,
its span, its log line, its journal entry and (for a run that did not succeed) a failure
report, here and nowhere else. Backends execute tasks and tell the recorder what happened."""

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, TracerProvider

from observability import names
from observability.logs.configuration import get_logger
from observability.logs.emitter import Emitter
from observability.logs.redaction import mask
from observability.logs.timestamps import iso
from observability.metrics.tasks import TaskMetrics
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.failure import FailureReport, FailureSink
from observability.tasks.journal import TaskJournal
from observability.tasks.run import Run
from observability.tasks.timeout import timeout_message
from observability.tracing.destination import Destination
from observability.tracing.task_span import TaskSpans

if TYPE_CHECKING:
    from observability.delivery import DeliveryRecorder


class Recorder:
    """Records the tasks of one backend. ``timeout``: the limit a ``timeout`` outcome passed
    (for its message); ``lifecycle_events``: ``task.enqueued`` and ``task.started`` at INFO
    (else DEBUG: the terminal event carries every timestamp of the run)."""

    def __init__(
        self,
        *,
        backend: str,
        metrics: TaskMetrics,
        tracer_provider: TracerProvider,
        timeout: float,
        journal: TaskJournal | None = None,
        failure_sink: FailureSink | None = None,
        span_kind: SpanKind = SpanKind.INTERNAL,
        link_parent: bool = False,
        consumes: Destination | None = None,
        lifecycle_events: bool = False,
        delivery: "DeliveryRecorder | None" = None,
    ) -> None:
        self.backend = backend
        self.delivery = delivery
        self.metrics = metrics
        self.spans = TaskSpans(
            tracer_provider, backend, kind=span_kind, link_parent=link_parent, consumes=consumes
        )
        self.timeout = timeout
        self.journal = journal
        self.failure_sink = failure_sink
        self.log = get_logger("observability.runner", backend=backend)
        self._ends = Emitter("observability.runner", backend=backend)  # the terminal events
        self._queues: dict[str, tuple[Any, Any]] = {}
        # None when filtered out, so that the lifecycle events' fields are not even worked out
        self._lifecycle: Callable[..., Any] | None = None
        if lifecycle_events:
            self._lifecycle = self.log.info
        elif self.log.is_enabled_for(logging.DEBUG):
            self._lifecycle = self.log.debug

    # -- before a run -------------------------------------------------------------------------

    def accepted(self, envelope: TaskEnvelope) -> None:
        """The task was accepted and will run."""
        self.metrics.series(envelope.name, self.backend).enqueued.inc()
        if self.journal is not None:
            self.journal.queued(envelope.id, envelope.name, self.backend, envelope.enqueued_at)
        if self._lifecycle is not None:
            self._lifecycle(
                names.EVENT_ENQUEUED,
                task=envelope.name,
                task_id=envelope.id,
                enqueued_at=iso(envelope.enqueued_at),
            )

    def dropped(
        self,
        envelope: TaskEnvelope,
        reason: str,
        error: BaseException | None = None,
        *,
        accepted: bool = False,
    ) -> None:
        """The task will never run. ``accepted``: it had been accepted before, rather than
        refused at once (then also counted in ``background_task_refused_total``); the log line
        says which, so that every accepted task can be matched with its end."""
        self.metrics.dropped.labels(envelope.name, self.backend, reason).inc()
        if not accepted:
            self.metrics.refused.labels(envelope.name, self.backend, reason).inc()
        error_type = None if error is None else type(error).__name__
        if self.journal is not None:
            self.journal.dropped(
                envelope.id, envelope.name, self.backend, envelope.enqueued_at, reason, error_type
            )
        fields: dict[str, Any] = {
            "task": envelope.name,
            "task_id": envelope.id,
            "reason": reason,
            "accepted": accepted,
            "enqueued_at": iso(envelope.enqueued_at),
        }
        if error is not None:
            fields |= {"error_type": error_type, "error": str(error)}
        self.log.warning(names.EVENT_DROPPED, **fields)

    def redelivered(self, envelope: TaskEnvelope) -> None:
        """The broker delivered the task's message again (a worker died before acknowledging)."""
        self.metrics.redelivered.labels(envelope.name, self.backend).inc()
        self.log.warning(names.EVENT_REDELIVERED, task=envelope.name, task_id=envelope.id)

    def publishing(
        self, envelope: TaskEnvelope, destination: Destination
    ) -> AbstractContextManager[Span]:
        """The PRODUCER span (child of the request's) in which ``envelope`` is sent to a broker
        queue; the message carries its context, so the run's span continues the trace."""
        return self.spans.publish(envelope, destination, mask)

    # -- the backend's state ------------------------------------------------------------------

    def queue_declared(self, queue: str, capacity: int | None = None) -> None:
        """The backend has ``queue`` (its gauges at zero) and, if given, runs ``capacity`` tasks
        at once."""
        self._queues[queue] = self.metrics.declare_queue(self.backend, queue)
        if capacity is not None:
            self.metrics.capacity.labels(self.backend).set(capacity)

    def queue_changed(self, queue: str, depth: int, oldest_enqueued_at: float) -> None:
        """``depth`` tasks wait in ``queue``, the oldest enqueued then (0: none)."""
        depth_gauge, oldest_gauge = self._queues[queue]
        depth_gauge.set(depth)
        oldest_gauge.set(oldest_enqueued_at)

    def drain_timed_out(self, grace: float, pending: int, running: int) -> None:
        """The shutdown grace ended with tasks still waiting or running."""
        self.log.warning(
            names.EVENT_DRAIN_TIMEOUT, grace_seconds=grace, pending=pending, running=running
        )

    def publish_failed(self, envelope: TaskEnvelope, error: BaseException) -> None:
        """The broker did not take the task (it is then refused with the request's 503)."""
        self.log.error(
            names.EVENT_PUBLISH_FAILED,
            task=envelope.name,
            task_id=envelope.id,
            error_type=type(error).__name__,
            error=str(error),
        )

    def broker_unreachable(self, error: BaseException) -> None:
        self.log.warning(
            names.EVENT_BROKER_UNREACHABLE, error_type=type(error).__name__, error=str(error)
        )

    def lookup_failed(self, task_id: str, error: BaseException) -> None:
        """The result backend could not say what became of a task."""
        self.log.warning(
            names.EVENT_LOOKUP_FAILED, task_id=task_id, error_type=type(error).__name__
        )

    # -- a run --------------------------------------------------------------------------------

    def started(self, envelope: TaskEnvelope, parent: Context | None = None) -> Run:
        """A run starts; its span is a child of the enqueuing request's context ``parent``,
        else of the context the envelope carries."""
        run = self._run(envelope, parent, ran_for=0.0)
        started_at, queue_wait = run.started_at, run.queue_wait
        self.metrics.series(envelope.name, self.backend).record_start(
            started_at, queue_wait, run.exemplar
        )
        if self.journal is not None:
            self.journal.running(envelope.id, started_at, queue_wait)
        if self._lifecycle is not None:
            self._lifecycle(
                names.EVENT_STARTED,
                task=envelope.name,
                task_id=envelope.id,
                started_at=iso(started_at),
                queue_wait_seconds=queue_wait,
                **run.log_ids,
            )
        return run

    def finished(self, run: Run, outcome: str, error: BaseException | None = None) -> bool:
        """The run ended with ``outcome``; False (nothing recorded) if it had ended already,
        e.g. reported timed out while its thread went on."""
        return self._finish(run, outcome, error, live=True)

    def retried(
        self, run: Run, error: BaseException, requeue: Callable[[], None] | None = None
    ) -> bool:
        """The run failed with a transient error and its task will run again: ``requeue`` puts
        it back in its queue first, once the end is claimed and before it is recorded (the
        task is never out of sight of the books)."""
        return self._finish(run, names.OUTCOME_RETRY, error, live=True, claimed=requeue)

    def killed(self, envelope: TaskEnvelope, ran_for: float, error: BaseException) -> None:
        """A run whose process was killed under it (Celery's hard time limit), reported from
        another process as ``timeout``: its span, begun ``ran_for`` seconds ago (the dead
        process's span is lost), its end metrics, log and failure report."""
        run = self._run(envelope, None, ran_for=ran_for)  # its start counted where it ran
        self._finish(run, names.OUTCOME_TIMEOUT, error, live=False)

    def _run(self, envelope: TaskEnvelope, parent: Context | None, *, ran_for: float) -> Run:
        """A run begun ``ran_for`` seconds ago, with its span; nothing recorded yet."""
        started_at, started_perf = time.time() - ran_for, time.perf_counter() - ran_for
        queue_wait = max(0.0, started_at - envelope.enqueued_at)
        span = self.spans.start(envelope, parent, started_at, queue_wait)
        return Run(envelope, span, started_at, started_perf, queue_wait, self.delivery)

    def overran(self, run: Run, error: BaseException | None) -> None:
        """A run reported timed out has now returned (``error``: what it raised, if anything)."""
        self.log.warning(
            names.EVENT_OVERRAN,
            task=run.envelope.name,
            task_id=run.envelope.id,
            overran_seconds=run.elapsed() - (run.duration or 0.0),
            error_type=type(error).__name__ if error else None,
            **run.log_ids,
        )

    def _finish(
        self,
        run: Run,
        outcome: str,
        error: BaseException | None,
        *,
        live: bool,
        claimed: Callable[[], None] | None = None,
    ) -> bool:
        duration = run.end(outcome)
        if duration is None:
            return False
        if claimed is not None:
            claimed()
        envelope = run.envelope
        finished_at = run.started_at + duration
        if error is None and outcome == names.OUTCOME_SUCCESS:  # the common case, in short
            error_type, message = None, ""
        else:
            error_type = self._error_type(outcome, error)
            message = self._error_message(outcome, error)
        series = self.metrics.series(envelope.name, self.backend)
        series.record_finish(outcome, duration, finished_at, run.exemplar, live=live)
        if error_type is not None and outcome != names.OUTCOME_SUCCESS:
            series.record_failure(error_type)
        if self.journal is not None:
            self.journal.finished(envelope.id, outcome, finished_at, duration, error_type)
        failed = outcome != names.OUTCOME_SUCCESS
        failure = (str(error_type), message, error) if failed else None
        self._log_end(run, outcome, finished_at, error_type, message)
        self.spans.end(run.span, outcome, finished_at, failure, mask)
        if failed:
            self._report(
                FailureReport(
                    envelope.name,
                    envelope.id,
                    self.backend,
                    outcome,
                    error_type or "Exception",
                    message,
                )
            )
        return True

    def _log_end(
        self, run: Run, outcome: str, finished_at: float, error_type: str | None, message: str
    ) -> None:
        fields: dict[str, Any] = {
            "task": run.envelope.name,
            "task_id": run.envelope.id,
            "outcome": outcome,
            "started_at": iso(run.started_at),
            "finished_at": iso(finished_at),
            "duration_seconds": run.duration,
            "queue_wait_seconds": run.queue_wait,
        }
        if error_type is not None:
            fields |= {"error_type": error_type, "error": message}
        if run.details:
            fields |= run.details
        fields |= run.log_ids
        if outcome == names.OUTCOME_SUCCESS:
            self._ends.info(names.EVENT_SUCCEEDED, fields)
        else:
            self._ends.error(names.OUTCOME_EVENTS[outcome], fields)

    @staticmethod
    def _error_type(outcome: str, error: BaseException | None) -> str | None:
        if error is not None:
            return type(error).__name__
        return "TimeoutError" if outcome == names.OUTCOME_TIMEOUT else None

    def _error_message(self, outcome: str, error: BaseException | None) -> str:
        if error is not None and str(error):
            return str(error)
        if outcome == names.OUTCOME_TIMEOUT:
            return timeout_message(self.timeout)
        return "" if error is None else type(error).__name__

    def _report(self, report: FailureReport) -> None:
        if self.failure_sink is None:
            return
        try:
            self.failure_sink(report)
        except Exception as exc:  # the sink must never take the recorder down
            self.log.error(
                names.EVENT_FAILURE_SINK_ERROR,
                task=report.task,
                task_id=report.task_id,
                error_type=type(exc).__name__,
                error=str(exc),
            )
