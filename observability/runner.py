"""The instrumented runner: every task run, whatever the backend, goes through here and leaves
metrics, one span, log events, a journal entry and (on failure) a failure report."""

import asyncio
import contextvars
import functools
import inspect
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from observability import names
from observability.envelope import TaskEnvelope
from observability.journal import OUTCOME_STATES, TaskJournal, TaskRecord
from observability.logs import get_logger
from observability.metrics import TaskMetrics
from observability.redaction import mask

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


def iso(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 in UTC."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _hex_trace_id(span: Span) -> str | None:
    context = span.get_span_context()
    return (
        format(context.trace_id, "032x")
        if context.is_valid and context.trace_flags.sampled
        else None
    )


class Run:
    """One run under way: its span and clocks. Finish it exactly once."""

    def __init__(self, runner: "TaskRunner", envelope: TaskEnvelope, span: Span) -> None:
        self.runner = runner
        self.envelope = envelope
        self.span = span
        self.started_at = time.time()
        self.queue_wait = max(0.0, self.started_at - envelope.enqueued_at)
        self.started_perf = time.perf_counter()
        self.outcome: str | None = None
        self.duration: float | None = None

    def finish(self, outcome: str, error: BaseException | None = None) -> None:
        """Record the end of the run."""
        duration = time.perf_counter() - self.started_perf
        self.outcome, self.duration = outcome, duration
        self.runner._record_finish(self, outcome, duration, error)


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
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.tracer = tracer_provider.get_tracer(__name__)
        self.timeout = timeout
        self.journal = journal
        self.failure_sink = failure_sink
        self.span_kind = span_kind
        self.log = get_logger("observability.runner", backend=backend)

    # -- before a run -------------------------------------------------------------------------

    def accepted(self, envelope: TaskEnvelope) -> None:
        """A task was accepted and will run (count, journal, ``task.enqueued``)."""
        self.metrics.series(envelope.name, self.backend).enqueued.inc()
        if self.journal is not None:
            self.journal.add(
                TaskRecord(envelope.id, envelope.name, self.backend, "queued", envelope.enqueued_at)
            )
        self.log.info(
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

    # -- a run --------------------------------------------------------------------------------

    def begin(self, envelope: TaskEnvelope) -> Run:
        """Start a run: span (child of the enqueuing request's span), metrics, ``task.started``."""
        parent = propagate.extract(envelope.trace_context)
        span = self.tracer.start_span(
            f"{names.TASK_SPAN_PREFIX} {envelope.name}",
            context=parent,
            kind=self.span_kind,
            attributes={
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.backend,
            },
        )
        run = Run(self, envelope, span)
        span.set_attribute(names.ATTR_TASK_QUEUE_WAIT, run.queue_wait)
        series = self.metrics.series(envelope.name, self.backend)
        series.started.inc()
        series.in_progress.inc()
        series.last_started.set(run.started_at)
        self._observe(series.queue_wait, run.queue_wait, span)
        if self.journal is not None:
            self.journal.update(
                envelope.id,
                state="running",
                started_at=run.started_at,
                queue_wait_seconds=run.queue_wait,
            )
        with trace.use_span(span, end_on_exit=False):
            self.log.info(
                names.EVENT_STARTED,
                task=envelope.name,
                task_id=envelope.id,
                started_at=iso(run.started_at),
                queue_wait_seconds=run.queue_wait,
            )
        return run

    def _record_finish(
        self, run: Run, outcome: str, duration: float, error: BaseException | None
    ) -> None:
        envelope, span = run.envelope, run.span
        finished_at = run.started_at + duration
        series = self.metrics.series(envelope.name, self.backend)
        finished, histogram, last_finished = series.outcome(outcome)
        finished.inc()
        self._observe(histogram, duration, span)
        series.in_progress.dec()
        last_finished.set(finished_at)
        error_type = None if error is None else type(error).__name__
        if outcome == names.OUTCOME_TIMEOUT and error is None:
            error_type = "TimeoutError"
        if error_type is not None and outcome != names.OUTCOME_SUCCESS:
            self.metrics.failures.labels(*series.labels, error_type).inc()
        if self.journal is not None:
            self.journal.update(
                envelope.id,
                state=OUTCOME_STATES[outcome],
                finished_at=finished_at,
                duration_seconds=duration,
                error_type=error_type,
            )
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
        with trace.use_span(span, end_on_exit=False):
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

    @staticmethod
    def _observe(histogram: Any, value: float, span: Span) -> None:
        trace_id = _hex_trace_id(span)
        histogram.observe(value, exemplar={"trace_id": trace_id} if trace_id else None)

    # -- executing ----------------------------------------------------------------------------

    async def run_async(
        self, envelope: TaskEnvelope, func: TaskFunction, executor: Executor
    ) -> str:
        """Run ``func`` bounded by the timeout: coroutine functions on the loop (cancelled on
        timeout), others in ``executor`` (reported ``timeout`` at the deadline; the thread keeps
        running, and this coroutine waits for it, so the concurrency slot stays taken)."""
        run = self.begin(envelope)
        with trace.use_span(run.span, end_on_exit=False):
            try:
                if _is_async_callable(func):
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

    async def _await_thread(self, run: Run, func: TaskFunction, executor: Executor) -> None:
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
            self.log.warning(
                names.EVENT_OVERRAN,
                task=envelope.name,
                task_id=envelope.id,
                overran_seconds=time.perf_counter() - run.started_perf - (run.duration or 0.0),
                error_type=type(error).__name__ if error else None,
            )

    @staticmethod
    def _expire(run: Run) -> None:
        if run.outcome is None:
            run.finish(names.OUTCOME_TIMEOUT)

    def run_sync(self, envelope: TaskEnvelope, func: TaskFunction, *, retry: bool = False) -> Run:
        """Run ``func`` in this thread (Celery workers); the backend enforces the time limit and
        ``TimeoutError`` (or a subclass) raised by it is reported as ``timeout``. With ``retry``
        a failure is reported as outcome ``retry`` (the backend will run the task again)."""
        run = self.begin(envelope)
        with trace.use_span(run.span, end_on_exit=False):
            try:
                func(*envelope.args, **envelope.kwargs)
            except TimeoutError as exc:
                run.finish(names.OUTCOME_TIMEOUT, exc)
                raise
            except BaseException as exc:
                run.finish(names.OUTCOME_RETRY if retry else names.OUTCOME_FAILURE, exc)
                raise
            run.finish(names.OUTCOME_SUCCESS)
        return run


def _is_async_callable(func: TaskFunction) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )
