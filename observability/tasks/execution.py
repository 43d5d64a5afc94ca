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
from observability.tasks.retry import RetryPolicy
from observability.tasks.run import Run
from observability.tasks.timeout import TaskTimeout

OnRetry = Callable[[float], None]  # told the delay before the next run of a retried task


def call_in_thread(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    parent: Context | None = None,
    started: Callable[[Run], None] | None = None,
    retry: tuple[RetryPolicy, OnRetry] | None = None,
) -> Run:
    """Run the plain function ``func`` in this thread (an in-process run slot). ``started`` is
    told of the run first, so that a watchdog can report it timed out at the deadline while the
    function goes on; it is then recorded as overran. With ``retry``, a failure the policy
    retries is recorded as ``retry`` and the callback told when to run the task again."""
    run = recorder.started(envelope, parent)
    if started is not None:
        started(run)
    error: Exception | None = None
    with _Inside(run, parent):
        try:
            func(*envelope.args, **envelope.kwargs)
        except Exception as exc:
            error = exc
            finished = _failed(recorder, run, exc, retry)
        else:
            finished = recorder.finished(run, names.OUTCOME_SUCCESS)
    if not finished and run.outcome == names.OUTCOME_TIMEOUT:
        recorder.overran(run, error)
    return run


async def await_coroutine(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    timeout: float,
    parent: Context | None = None,
    retry: tuple[RetryPolicy, OnRetry] | None = None,
) -> str:
    """Run the coroutine function ``func`` on this loop, cancelled at ``timeout``; returns the
    outcome. A cancellation from outside (shutdown) is recorded as a failure and goes on;
    ``retry`` as for ``call_in_thread``."""
    run = recorder.started(envelope, parent)
    with _Inside(run, parent):
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
            _failed(recorder, run, exc, retry)
    # A coroutine that blocked the loop past its deadline returns before it can be cancelled:
    # still a timeout.
    if run.outcome is None and time.perf_counter() - run.started_perf > timeout:
        recorder.finished(run, names.OUTCOME_TIMEOUT)
    recorder.finished(run, names.OUTCOME_SUCCESS)
    return run.outcome or names.OUTCOME_FAILURE


def call_sync(
    recorder: Recorder,
    envelope: TaskEnvelope,
    func: TaskFunction,
    *,
    retry: tuple[RetryPolicy, OnRetry] | None = None,
    started: Callable[[Run], None] | None = None,
) -> Run:
    """Run ``func()`` in this thread (Celery workers): the worker enforces the time limit and
    raises ``TaskTimeout``, recorded as ``timeout``; ``retry`` as for ``call_in_thread`` (the
    worker runs the task again). Re-raises. ``started`` is told of the run first."""
    run = recorder.started(envelope)
    if started is not None:
        started(run)
    with _Inside(run, None):
        try:
            func()
        except TaskTimeout as exc:
            recorder.finished(run, names.OUTCOME_TIMEOUT, exc)
            raise
        except Exception as exc:
            _failed(recorder, run, exc, retry)
            raise
        except BaseException as exc:
            recorder.finished(run, names.OUTCOME_FAILURE, exc)
            raise
        recorder.finished(run, names.OUTCOME_SUCCESS)
    return run


class _Inside:
    """The run's span is the current span, and the run the current run (``current_run``).
    A class rather than a generator: ``contextlib.contextmanager`` costs a generator and its
    wrapper per run."""

    __slots__ = ("_current", "_parent", "_run", "_token")

    def __init__(self, run: Run, parent: Context | None) -> None:
        self._run, self._parent = run, parent

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._run.span, self._parent))
        self._current = self._run.enter()

    def __exit__(self, *_: object) -> None:
        Run.leave(self._current)
        otel_context.detach(self._token)


def _failed(
    recorder: Recorder, run: Run, error: Exception, retry: tuple[RetryPolicy, OnRetry] | None
) -> bool:
    """Record a run that raised ``error``: ``retry`` if the policy says so, else ``failure``."""
    policy, on_retry = retry or (None, None)
    delay = None if policy is None else policy.delay(error, run.envelope.retries)
    if delay is None or on_retry is None:
        return recorder.finished(run, names.OUTCOME_FAILURE, error)
    return recorder.retried(run, error, lambda: on_retry(delay))
