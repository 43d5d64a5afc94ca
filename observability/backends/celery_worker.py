"""The Celery backend, worker side: the one registered Celery task runs each message through
the worker's runtime, which resolves the task by name and calls it inside a recorded run,
bounded by Celery's time limits (prefork) or by a thread of its own (threads pool); transient
failures are retried with exponential backoff."""

import contextvars
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from observability.backends.celery_message import RUN_TASK, TIMED_OUT, envelope_from_message
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.execution import call_sync
from observability.tasks.function import TaskFunction
from observability.tasks.recorder import Recorder
from observability.tasks.run import Run
from observability.tasks.timeout import TaskTimeout

# Errors worth another attempt: I/O, connections, timeouts of calls the task makes. Anything
# else (ValueError, TypeError, LookupError, ...) is a bug or bad input and fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError,)


class WorkerRuntime:
    """What a worker process runs tasks with; built once, in the process that runs them.

    ``celery_time_limits`` (prefork pool): the body runs in this thread and Celery's soft time
    limit interrupts it (``SoftTimeLimitExceeded``), reported as ``timeout``; the hard limit
    kills a body that survives it. Otherwise (threads pool, which ignores Celery's limits) the
    body runs in a thread of its own, is reported ``timeout`` at the deadline, and keeps its
    Celery slot until it returns (like in-process)."""

    def __init__(
        self,
        recorder: Recorder,
        resolve: Callable[[str], TaskFunction],
        *,
        timeout: float,
        celery_time_limits: bool = False,
    ) -> None:
        self.recorder = recorder
        self.resolve = resolve
        self.timeout = timeout
        self.celery_time_limits = celery_time_limits

    def run(
        self,
        payload: dict[str, Any],
        report: Callable[[str], None],
        *,
        retry: bool = False,
        redelivered: bool = False,
    ) -> dict[str, Any]:
        """Run one message; ``report(state)`` publishes an interim state (a timed-out run whose
        body is still running) to the result backend; ``retry``: a transient failure will be
        retried; ``redelivered``: the broker delivered this message before (counted)."""
        envelope = envelope_from_message(payload)
        if redelivered:
            self.recorder.redelivered(envelope)
        func = self.resolve(envelope.name)
        retry_on = TRANSIENT_ERRORS if retry else ()
        bare = replace(envelope, args=(), kwargs={})
        if self.celery_time_limits:
            limited = self._limited(func, envelope)
            return _summary(call_sync(self.recorder, bare, limited, retry_on=retry_on))
        body = _Body(func, envelope.args, envelope.kwargs)

        def call() -> None:
            body.start()
            body.join(self.timeout)
            if body.is_alive():
                raise TaskTimeout.after(self.timeout)
            body.reraise()

        runs: list[Run] = []
        try:
            run = call_sync(self.recorder, bare, call, retry_on=retry_on, started=runs.append)
        except TaskTimeout:
            report(TIMED_OUT)
            body.join()
            self.recorder.overran(runs[0], body.error)
            raise
        return _summary(run)

    def _limited(self, func: TaskFunction, envelope: TaskEnvelope) -> Callable[[], None]:
        """``func`` with Celery's soft time limit reported as this backend's timeout."""

        def call() -> None:
            try:
                func(*envelope.args, **envelope.kwargs)
            except SoftTimeLimitExceeded as exc:
                raise TaskTimeout.after(self.timeout) from exc

        return call


def _summary(run: Run) -> dict[str, Any]:
    """What the result backend keeps of a finished run."""
    return {
        "outcome": run.outcome,
        "started_at": run.started_at,
        "duration_seconds": run.duration,
        "queue_wait_seconds": run.queue_wait,
    }


class _Body(threading.Thread):
    """A task body in a thread of its own, with the caller's context (current span)."""

    def __init__(self, func: TaskFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="task-body")
        self.func = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.func()
        except BaseException as exc:
            self.error = exc

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def register_run_task(
    app: Celery,
    runtime: Callable[[], WorkerRuntime],
    *,
    max_retries: int = 0,
    backoff: float = 1.0,
) -> None:
    """Register the one Celery task that runs envelopes through ``runtime()``. A run failing
    with a transient error (``TRANSIENT_ERRORS``; not a timeout) is retried up to
    ``max_retries`` times, ``backoff * 2**n`` seconds later, and ends with outcome ``retry``;
    any other error fails at once. The message is acknowledged after the run (``acks_late``)
    and put back if the process running it dies (``reject_on_worker_lost``)."""

    @app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
        retries = int(task.request.retries or 0)
        again = retries < max_retries
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        try:
            return runtime().run(
                payload,
                lambda state: task.update_state(state=state),
                retry=again,
                redelivered=redelivered,
            )
        except TaskTimeout:
            raise
        except TRANSIENT_ERRORS as exc:
            if not again:
                raise
            countdown = backoff * 2**retries
            retried = payload | {"enqueued_at": time.time() + countdown}
            raise task.retry(
                exc=exc, args=[retried], countdown=countdown, max_retries=max_retries
            ) from exc
