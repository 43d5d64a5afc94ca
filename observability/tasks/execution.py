"""Calling a task inside a run: the run's span is the current span while the task runs, and
whatever the task does (returns, raises, passes its deadline) is told to the recorder. The
backends choose where these run: a slot thread, the event loop, a Celery worker."""

import asyncio
import time
from collections.abc import Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from observability import names
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.function import TaskFunction
from observability.tasks.recorder import Recorder
from observability.tasks.run import Run


def call_in_thread(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    parent: Context | None = None,
    started: Callable[[Run], None] | None = None,
) -> Run:
    """Run the plain function ``func`` in this thread (an in-process run slot). ``started`` is
    told of the run first, so that a watchdog can report it timed out at the deadline while the
    function goes on; it is then recorded as overran."""
    run = recorder.started(envelope, parent)
    if started is not None:
        started(run)
    token = otel_context.attach(trace.set_span_in_context(run.span, parent))
    error: Exception | None = None
    try:
        func(*envelope.args, **envelope.kwargs)
    except Exception as exc:
        error = exc
        finished = recorder.finished(run, names.OUTCOME_FAILURE, exc)
    else:
        finished = recorder.finished(run, names.OUTCOME_SUCCESS)
    finally:
        otel_context.detach(token)
    if not finished and run.outcome == names.OUTCOME_TIMEOUT:
        recorder.overran(run, error)
    return run


async def await_coroutine(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    timeout: float,
    parent: Context | None = None,
) -> str:
    """Run the coroutine function ``func`` on this loop, cancelled at ``timeout``; returns the
    outcome. A cancellation from outside (shutdown) is recorded as a failure and goes on."""
    run = recorder.started(envelope, parent)
    token = otel_context.attach(trace.set_span_in_context(run.span, parent))
    try:
        try:
            async with asyncio.timeout(timeout) as deadline:
                try:
                    await func(*envelope.args, **envelope.kwargs)
                except asyncio.CancelledError:
                    if deadline.expired():
                        recorder.finished(run, names.OUTCOME_TIMEOUT)
                    raise
        except asyncio.CancelledError as exc:
            recorder.finished(run, names.OUTCOME_FAILURE, exc)
            raise
        except Exception as exc:  # also the deadline's TimeoutError: the run has ended then
            recorder.finished(run, names.OUTCOME_FAILURE, exc)
        # A coroutine that blocked the loop past its deadline returns before it can be
        # cancelled: still a timeout.
        if run.outcome is None and time.perf_counter() - run.started_perf > timeout:
            recorder.finished(run, names.OUTCOME_TIMEOUT)
        recorder.finished(run, names.OUTCOME_SUCCESS)
    finally:
        otel_context.detach(token)
    return run.outcome or names.OUTCOME_FAILURE


def call_sync(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    started: Callable[[Run], None] | None = None,
) -> Run:
    """Run ``func()`` in this thread (Celery workers): the worker enforces the time limit, and
    ``TimeoutError`` (or a subclass) raised by ``func`` is recorded as ``timeout``; a failure
    of a ``retry_on`` class as ``retry`` (the worker will run the task again). Re-raises.
    ``started`` is told of the run first."""
    run = recorder.started(envelope)
    if started is not None:
        started(run)
    token = otel_context.attach(trace.set_span_in_context(run.span))
    try:
        try:
            func()
        except TimeoutError as exc:
            recorder.finished(run, names.OUTCOME_TIMEOUT, exc)
            raise
        except BaseException as exc:
            if isinstance(exc, retry_on):
                recorder.retried(run, exc)
            else:
                recorder.finished(run, names.OUTCOME_FAILURE, exc)
            raise
        recorder.finished(run, names.OUTCOME_SUCCESS)
    finally:
        otel_context.detach(token)
    return run
