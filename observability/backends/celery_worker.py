"""The Celery backend, worker side: the one registered Celery task runs each message through
the worker's runtime, which resolves the task by name and calls it inside a recorded run,
bounded by Celery's time limits (prefork) or by a thread of its own (threads pool); transient
failures are retried with exponential backoff."""

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request

from observability.backends.celery_error import stand_in
from observability.backends.celery_message import (
    RUN_TASK,
    TIMED_OUT,
    celery_name,
    envelope_from_message,
    masked_reprs,
)
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.execution import call_sync
from observability.tasks.function import TaskFunction
from observability.tasks.recorder import Recorder
from observability.tasks.retry import RetryPolicy
from observability.tasks.run import Run
from observability.tasks.timeout import TaskTimeout


class RetryLater(Exception):
    """The run failed with an error the policy retries: run the task again in ``delay``
    seconds (the error is the ``__cause__``)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:.3f}s")
        self.delay = delay


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
        retry: RetryPolicy | None = None,
        celery_time_limits: bool = False,
    ) -> None:
        self.recorder = recorder
        self.resolve = resolve
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.celery_time_limits = celery_time_limits

    def run(
        self,
        payload: dict[str, Any],
        report: Callable[[str], None],
        *,
        redelivered: bool = False,
    ) -> dict[str, Any]:
        """Run one message; ``report(state)`` publishes an interim state (a timed-out run whose
        body is still running) to the result backend; ``redelivered``: the broker delivered
        this message before (counted). Raises ``RetryLater`` for a failure to be retried."""
        envelope = envelope_from_message(payload)
        if redelivered:
            self.recorder.redelivered(envelope)
        func = self.resolve(envelope.name)
        bare = replace(envelope, args=(), kwargs={})
        delays: list[float] = []
        try:
            return self._call(envelope, bare, func, report, (self.retry, delays.append))
        except Exception as exc:
            if delays:
                raise RetryLater(delays[0]) from exc
            raise

    def _call(
        self,
        envelope: TaskEnvelope,
        bare: TaskEnvelope,
        func: TaskFunction,
        report: Callable[[str], None],
        retry: tuple[RetryPolicy, Callable[[float], None]],
    ) -> dict[str, Any]:
        if self.celery_time_limits:
            limited = self._limited(func, envelope)
            return _summary(call_sync(self.recorder, bare, limited, retry=retry))
        body = _Body(func, envelope.args, envelope.kwargs)

        def call() -> None:
            body.start()
            body.join(self.timeout)
            if body.is_alive():
                raise TaskTimeout.after(self.timeout)
            body.reraise()

        runs: list[Run] = []
        try:
            run = call_sync(self.recorder, bare, call, retry=retry, started=runs.append)
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
    """A task body in a thread of its own, with the context of the thread that starts it (the
    run's span and the current run)."""

    def __init__(self, func: TaskFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="task-body")
        self.func = functools.partial(func, *args, **kwargs)
        self.context = contextvars.copy_context()
        self.error: BaseException | None = None

    def start(self) -> None:
        self.context = contextvars.copy_context()
        super().start()

    def run(self) -> None:
        try:
            self.context.run(self.func)
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
    task_names: Iterable[str] = (),
) -> None:
    """Register the Celery tasks that run envelopes through ``runtime()``: one per task name
    (``background_task.<name>``, what the API publishes, so Celery's tools tell them apart) and
    ``RUN_TASK`` (messages published before names were used); each runs any envelope by the
    name in its message. A run the runtime's retry policy retries (``RetryLater``) ends with
    outcome ``retry`` and is sent again with the policy's delay as countdown. The message is
    acknowledged after the run (``acks_late``) and put back if the process running it dies
    (``reject_on_worker_lost``). Celery sees masked arguments and stand-ins of the run's errors
    (``celery_error``), never a message's values."""
    for name in (RUN_TASK, *(celery_name(task) for task in task_names)):
        _register(app, name, runtime, max_retries)


def _register(
    app: Celery, name: str, runtime: Callable[[], WorkerRuntime], max_retries: int
) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=name, bind=True, acks_late=True, reject_on_worker_lost=True, Request=MaskedRequest
    )
    def run(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        try:
            return runtime().run(
                payload, lambda state: task.update_state(state=state), redelivered=redelivered
            )
        except RetryLater as later:
            ended: BaseException = later
        except Exception as exc:
            ended = exc
        # Outside the handler: what Celery records carries no chained original error.
        if not isinstance(ended, RetryLater):
            raise stand_in(ended) from None
        retries = int(task.request.retries or 0) + 1
        retried = payload | {"enqueued_at": time.time() + ended.delay, "retries": retries}
        raise task.retry(
            exc=stand_in(ended.__cause__ or ended),
            args=[retried],
            countdown=ended.delay,
            max_retries=max(max_retries, retries),
            **masked_reprs(retried),
        )


class MaskedRequest(Request):  # type: ignore[misc]
    """Celery's request of a task, whose ``inspect`` answers (``active``, ``reserved``,
    ``scheduled``, ``query_task``: Flower's worker pages) show the masked ``argsrepr`` and
    ``kwargsrepr`` instead of the message (Celery's default for all but ``active --safe``)."""

    def info(self, safe: bool = False) -> dict[str, Any]:
        return super().info(safe=True)  # type: ignore[no-any-return]
