"""The instrumented runner: every task run, whatever the backend, goes through here and leaves
metrics, one span, log events, a journal entry and (on failure) a failure report."""

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider

from observability import names
from observability.envelope import TaskEnvelope
from observability.journal import OUTCOME_STATES, TaskJournal, TaskRecord
from observability.logs import get_logger
from observability.metrics import TaskMetrics
from observability.redaction import mask
from observability.timestamps import iso

TaskFunction = Callable[..., Any]


@dataclass(frozen=True)
class FailureReport:
    """A run that did not succeed, as handed to the failure sink."""

    task: str
    task_id: str
    backend: str
    outcome: str
    error_type: str
    error: str


class FailureSink(Protocol):
    def __call__(self, report: FailureReport) -> None: ...


class Run:
    """One run under way: its span, clocks, and the ids its log events and exemplars carry
    (worked out once). Finish it exactly once."""

    def __init__(
        self,
        runner: "TaskRunner",
        envelope: TaskEnvelope,
        span: Span,
        started_at: float,
        started_perf: float,
        queue_wait: float,
    ) -> None:
        self.runner = runner
        self.envelope = envelope
        self.span = span
        self.started_at = started_at
        self.started_perf = started_perf
        self.queue_wait = queue_wait
        self.outcome: str | None = None
        self.duration: float | None = None
        self._finishing = threading.Lock()  # finish() runs once, whichever thread comes first
        context = span.get_span_context()
        self.log_ids: dict[str, str] = {}
        self.exemplar: dict[str, str] | None = None
        if context.is_valid:
            trace_id = format(context.trace_id, "032x")
            self.log_ids = {"trace_id": trace_id, "span_id": format(context.span_id, "016x")}
            if context.trace_flags.sampled:
                self.exemplar = {"trace_id": trace_id}

    def finish(self, outcome: str, error: BaseException | None = None) -> bool:
        """Record the end of the run; False (and nothing recorded) if it was already ended, e.g.
        reported timed out while its thread went on."""
        if not self._finishing.acquire(blocking=False):
            return False
        duration = time.perf_counter() - self.started_perf
        self.outcome, self.duration = outcome, duration
        self.runner._record_finish(self, outcome, duration, error)
        return True


class TaskRunner:
    """Wraps task runs of one backend with metrics, tracing, logs and the failure sink."""

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
        lifecycle_events: bool = False,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.tracer = tracer_provider.get_tracer(__name__)
        self.timeout = timeout
        self.journal = journal
        self.failure_sink = failure_sink
        self.span_kind = span_kind
        self.link_parent = link_parent
        self.log = get_logger("observability.runner", backend=backend)
        # task.enqueued and task.started: INFO with ``lifecycle_events``, else DEBUG (the
        # terminal event carries every timestamp of the run); None when filtered out, so that
        # their fields are not even worked out
        self._lifecycle: Callable[..., Any] | None = None
        if lifecycle_events:
            self._lifecycle = self.log.info
        elif self.log.is_enabled_for(logging.DEBUG):
            self._lifecycle = self.log.debug

    # -- before a run -------------------------------------------------------------------------

    def accepted(self, envelope: TaskEnvelope) -> None:
        """A task was accepted and will run (count, journal, ``task.enqueued``)."""
        self.metrics.series(envelope.name, self.backend).enqueued.inc()
        if self.journal is not None:
            self.journal.add(
                TaskRecord(envelope.id, envelope.name, self.backend, "queued", envelope.enqueued_at)
            )
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
        """A task will never run (count, journal, ``task.dropped``). ``accepted``: it had been
        accepted (enqueued) before, rather than refused at once (then also counted in
        ``background_task_refused_total``); the log line says which, so every enqueued task
        can be matched with its end."""
        self.metrics.dropped.labels(envelope.name, self.backend, reason).inc()
        if not accepted:
            self.metrics.refused.labels(envelope.name, self.backend, reason).inc()
        if self.journal is not None:
            if self.journal.get(envelope.id) is None:
                self.journal.add(
                    TaskRecord(
                        envelope.id, envelope.name, self.backend, "dropped", envelope.enqueued_at
                    )
                )
            self.journal.update(
                envelope.id,
                state="dropped",
                drop_reason=reason,
                error_type=type(error).__name__ if error else None,
            )
        fields: dict[str, Any] = {
            "task": envelope.name,
            "task_id": envelope.id,
            "reason": reason,
            "accepted": accepted,
            "enqueued_at": iso(envelope.enqueued_at),
        }
        if error is not None:
            fields |= {"error_type": type(error).__name__, "error": str(error)}
        self.log.warning(names.EVENT_DROPPED, **fields)

    def _record(self, task_id: str) -> TaskRecord | None:
        """The journal's record of ``task_id``, updated in place by a run."""
        return None if self.journal is None else self.journal.get(task_id)

    # -- a run --------------------------------------------------------------------------------

    def begin(self, envelope: TaskEnvelope, parent: Context | None = None) -> Run:
        """Start a run: span (child of the enqueuing request's span: ``parent``, else the
        envelope's trace context), metrics, ``task.started``."""
        started_at, started_perf = time.time(), time.perf_counter()
        queue_wait = max(0.0, started_at - envelope.enqueued_at)
        span = self._start_span(envelope, parent, started_at, queue_wait)
        run = Run(self, envelope, span, started_at, started_perf, queue_wait)
        series = self.metrics.series(envelope.name, self.backend)
        series.started.inc()
        series.in_progress.inc()
        series.last_started.set(started_at)
        series.queue_wait.observe(queue_wait, exemplar=run.exemplar)
        record = self._record(envelope.id)
        if record is not None:
            record.state, record.started_at = "running", started_at
            record.queue_wait_seconds = queue_wait
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

    def _start_span(
        self, envelope: TaskEnvelope, parent: Context | None, started_at: float, queue_wait: float
    ) -> Span:
        """The run's span: a child of ``parent`` or of the context the envelope carries or,
        with ``link_parent``, the root of a trace of its own with a link to that context."""
        if parent is None:
            parent = propagate.extract(envelope.trace_context)
        links: list[Link] = []
        if self.link_parent:
            linked = trace.get_current_span(parent).get_span_context()
            parent, links = Context(), [Link(linked)] if linked.is_valid else []
        return self.tracer.start_span(
            f"{names.TASK_SPAN_PREFIX} {envelope.name}",
            context=parent,
            kind=self.span_kind,
            links=links,
            start_time=int(started_at * 1e9),
            attributes={
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.backend,
                names.ATTR_TASK_QUEUE_WAIT: queue_wait,
            },
        )

    def _record_finish(
        self, run: Run, outcome: str, duration: float, error: BaseException | None
    ) -> None:
        envelope, span = run.envelope, run.span
        finished_at = run.started_at + duration
        series = self.metrics.series(envelope.name, self.backend)
        finished, histogram, last_finished = series.outcome(outcome)
        finished.inc()
        histogram.observe(duration, exemplar=run.exemplar)
        series.in_progress.dec()
        last_finished.set(finished_at)
        error_type = None if error is None else type(error).__name__
        if outcome == names.OUTCOME_TIMEOUT and error is None:
            error_type = "TimeoutError"
        if error_type is not None and outcome != names.OUTCOME_SUCCESS:
            self.metrics.failures.labels(*series.labels, error_type).inc()
        record = self._record(envelope.id)
        if record is not None:
            record.state, record.finished_at = OUTCOME_STATES[outcome], finished_at
            record.duration_seconds, record.error_type = duration, error_type
        span.set_attribute(names.ATTR_TASK_OUTCOME, outcome)
        message = self._error_message(outcome, error)
        if outcome != names.OUTCOME_SUCCESS:
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {mask(message)}"))
            if error is not None:
                span.record_exception(
                    error,
                    attributes={
                        "exception.message": mask(message),
                        "exception.stacktrace": mask("".join(traceback.format_exception(error))),
                    },
                )
        fields: dict[str, Any] = {
            "task": envelope.name,
            "task_id": envelope.id,
            "outcome": outcome,
            "started_at": iso(run.started_at),
            "finished_at": iso(finished_at),
            "duration_seconds": duration,
            "queue_wait_seconds": run.queue_wait,
        }
        if error_type is not None:
            fields |= {"error_type": error_type, "error": message}
        fields |= run.log_ids
        if outcome == names.OUTCOME_SUCCESS:
            self.log.info(names.EVENT_SUCCEEDED, **fields)
        else:
            self.log.error(names.OUTCOME_EVENTS[outcome], **fields)
        span.end(end_time=int(finished_at * 1e9))
        if outcome != names.OUTCOME_SUCCESS:
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

    def _error_message(self, outcome: str, error: BaseException | None) -> str:
        if error is not None and str(error):
            return str(error)
        if outcome == names.OUTCOME_TIMEOUT:
            return f"task exceeded its {self.timeout:g}s timeout"
        return "" if error is None else type(error).__name__

    def _report(self, report: FailureReport) -> None:
        if self.failure_sink is None:
            return
        try:
            self.failure_sink(report)
        except Exception as exc:  # the sink must never take the runner down
            self.log.error(
                names.EVENT_FAILURE_SINK_ERROR,
                task=report.task,
                task_id=report.task_id,
                error_type=type(exc).__name__,
                error=str(exc),
            )

    # -- executing ----------------------------------------------------------------------------

    async def run_async(
        self,
        envelope: TaskEnvelope,
        func: TaskFunction,
        executor: Executor | None,
        *,
        parent: Context | None = None,
    ) -> str:
        """Run ``func`` bounded by the timeout: coroutine functions on the loop (cancelled on
        timeout), others in ``executor`` (reported ``timeout`` at the deadline; the thread keeps
        running, and this coroutine waits for it, so the concurrency slot stays taken)."""
        run = self.begin(envelope, parent)
        token = otel_context.attach(trace.set_span_in_context(run.span, parent))
        try:
            try:
                if is_async_callable(func):
                    await self._await_coroutine(run, func)
                else:
                    await self._await_thread(run, func, executor)
            except asyncio.CancelledError as exc:
                if run.outcome is None:
                    run.finish(names.OUTCOME_FAILURE, exc)
                raise
            except Exception as exc:
                if run.outcome is None:
                    run.finish(names.OUTCOME_FAILURE, exc)
            if run.outcome is None:
                run.finish(names.OUTCOME_SUCCESS)
        finally:
            otel_context.detach(token)
        return run.outcome or names.OUTCOME_FAILURE

    async def _await_coroutine(self, run: Run, func: TaskFunction) -> None:
        envelope = run.envelope
        async with asyncio.timeout(self.timeout) as deadline:
            try:
                await func(*envelope.args, **envelope.kwargs)
            except asyncio.CancelledError:
                if deadline.expired():
                    run.finish(names.OUTCOME_TIMEOUT)
                raise
        # asyncio.timeout turns the cancellation into TimeoutError after the block. A coroutine
        # that blocked the loop past its deadline returns before it can be cancelled: still a
        # timeout.
        if time.perf_counter() - run.started_perf > self.timeout:
            run.finish(names.OUTCOME_TIMEOUT)

    async def _await_thread(self, run: Run, func: TaskFunction, executor: Executor | None) -> None:
        envelope = run.envelope
        call = functools.partial(
            contextvars.copy_context().run, func, *envelope.args, **envelope.kwargs
        )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, call)
        # At the deadline the run is reported as timed out; the thread can't be stopped, so
        # this coroutine keeps waiting for it (and keeps its concurrency slot).
        deadline = loop.call_later(self.timeout, self._expire, run)
        try:
            await future
        except Exception as exc:
            if run.outcome is None:
                raise
            error: BaseException | None = exc
        else:
            error = None
        finally:
            deadline.cancel()
        if run.outcome == names.OUTCOME_TIMEOUT:
            self._log_overran(run, error)

    def _log_overran(self, run: Run, error: BaseException | None) -> None:
        """A run reported timed out has now returned (``error``: what it raised, if anything)."""
        self.log.warning(
            names.EVENT_OVERRAN,
            task=run.envelope.name,
            task_id=run.envelope.id,
            overran_seconds=time.perf_counter() - run.started_perf - (run.duration or 0.0),
            error_type=type(error).__name__ if error else None,
            **run.log_ids,
        )

    @staticmethod
    def _expire(run: Run) -> None:
        if run.outcome is None:
            run.finish(names.OUTCOME_TIMEOUT)

    def run_in_thread(
        self,
        envelope: TaskEnvelope,
        func: TaskFunction,
        parent: Context | None = None,
        started: Callable[[Run], None] | None = None,
    ) -> Run:
        """Run the plain function ``func`` in this thread (an in-process run slot). ``started``
        is told of the run first, so that a watchdog can report it timed out at the deadline
        (``run.finish``) while the function goes on; it is then logged as overran."""
        run = self.begin(envelope, parent)
        if started is not None:
            started(run)
        token = otel_context.attach(trace.set_span_in_context(run.span, parent))
        try:
            func(*envelope.args, **envelope.kwargs)
        except Exception as exc:
            finished = run.finish(names.OUTCOME_FAILURE, exc)
            error: Exception | None = exc
        else:
            finished = run.finish(names.OUTCOME_SUCCESS)
            error = None
        finally:
            otel_context.detach(token)
        if not finished and run.outcome == names.OUTCOME_TIMEOUT:
            self._log_overran(run, error)
        return run

    def run_sync(
        self,
        envelope: TaskEnvelope,
        func: TaskFunction,
        *,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> Run:
        """Run ``func`` in this thread (Celery workers); the backend enforces the time limit and
        ``TimeoutError`` (or a subclass) raised by it is reported as ``timeout``. A failure of a
        ``retry_on`` class is reported as outcome ``retry`` (the backend will run it again)."""
        run = self.begin(envelope)
        token = otel_context.attach(trace.set_span_in_context(run.span))
        try:
            try:
                func(*envelope.args, **envelope.kwargs)
            except TimeoutError as exc:
                run.finish(names.OUTCOME_TIMEOUT, exc)
                raise
            except BaseException as exc:
                retried = isinstance(exc, retry_on)
                run.finish(names.OUTCOME_RETRY if retried else names.OUTCOME_FAILURE, exc)
                raise
            run.finish(names.OUTCOME_SUCCESS)
        finally:
            otel_context.detach(token)
        return run

    def report_killed(self, envelope: TaskEnvelope, ran_for: float, error: BaseException) -> None:
        """A run whose process was killed under it (Celery's hard time limit), reported from
        another process as ``timeout``: its span, begun ``ran_for`` seconds ago (the dead
        process's span is lost), the finish metrics, log and failure report. Its start was
        counted by the dead process, whose in-progress count is gone with it."""
        started_at = time.time() - ran_for
        queue_wait = max(0.0, started_at - envelope.enqueued_at)
        span = self._start_span(envelope, None, started_at, queue_wait)
        run = Run(self, envelope, span, started_at, time.perf_counter() - ran_for, queue_wait)
        self.metrics.series(envelope.name, self.backend).in_progress.inc()  # finish() takes it back
        run.finish(names.OUTCOME_TIMEOUT, error)


def is_async_callable(func: TaskFunction) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )
