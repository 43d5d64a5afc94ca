"""The Celery backend: the API publishes envelopes to the broker (with their trace context),
workers run them through the same instrumented runner."""

import asyncio
import base64
import contextvars
import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from starlette.concurrency import run_in_threadpool

from observability import names
from observability.dispatch import Admission, BackendUnavailable, TaskCall
from observability.envelope import TaskEnvelope, current_trace_context
from observability.logs import get_logger
from observability.runner import Run, TaskFunction, TaskRunner

RUN_TASK = "background_task.run"
POLL_SECONDS = 2.0
TIMED_OUT = "TIMED_OUT"  # a custom Celery state: reported timeout, body still running


# Errors worth another attempt: I/O, connections, timeouts of calls the task makes. Anything
# else (ValueError, TypeError, LookupError, ...) is a bug or bad input and fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError,)


class TaskTimeout(TimeoutError):
    """A worker run over the timeout, reported as outcome ``timeout`` (never retried)."""


class HardTimeLimitExceeded(TimeoutError):
    """A run Celery killed at its hard time limit, with the process running it."""


def envelope_from_message(payload: dict[str, Any]) -> TaskEnvelope:
    return TaskEnvelope(
        name=str(payload["name"]),
        args=tuple(payload.get("args", ())),
        kwargs=dict(payload.get("kwargs", {})),
        id=str(payload["id"]),
        enqueued_at=float(payload["enqueued_at"]),
        trace_context=dict(payload.get("trace_context", {})),
    )


class CeleryBackend:
    """Publishes each accepted task before the response (a broker failure is a 503 with
    ``reason=enqueue_error``, never a silent loss) and watches the queue depth on Redis."""

    name = "celery"

    def __init__(self, runner: TaskRunner, app: Celery, queue: str) -> None:
        self.runner = runner
        self.app = app
        self.queue = queue
        self._accepting = False
        self._broker_ok = False
        self._poller: asyncio.Task[None] | None = None
        self.log = get_logger("observability.broker", backend=self.name)
        runner.metrics.declare_queue(self.name, queue)

    async def start(self) -> None:
        self._accepting = True
        await self._refresh()
        self._poller = asyncio.create_task(self._poll(), name="celery-queue-poller")

    def ready(self) -> bool:
        return self._accepting and self._broker_ok

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, grace: float) -> None:
        """Nothing to drain here: accepted tasks wait in the broker for the workers."""
        self.stop_accepting()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        """What the workers reported of a task (Celery result backend), or None if nothing."""
        return await run_in_threadpool(self._lookup, task_id)

    def _lookup(self, task_id: str) -> dict[str, Any] | None:
        try:
            result = AsyncResult(task_id, app=self.app)
            state, value = result.state, result.result
        except Exception as exc:
            self.log.warning("broker.lookup_failed", task_id=task_id, error_type=type(exc).__name__)
            return None
        if state == "STARTED":
            return {"state": "running"}
        if state == "SUCCESS" and isinstance(value, dict):
            started = float(value["started_at"])
            duration = float(value["duration_seconds"])
            return {
                "state": "succeeded",
                "started_at": started,
                "finished_at": started + duration,
                "duration_seconds": duration,
                "queue_wait_seconds": value.get("queue_wait_seconds"),
            }
        if state == TIMED_OUT:
            return {"state": "timed_out", "error_type": "TaskTimeout"}
        if state == "RETRY":
            return {"state": "queued", "error_type": type(value).__name__}
        if state == "FAILURE":
            error_type = type(value).__name__
            timed_out = isinstance(value, TimeoutError) or error_type in (
                "TaskTimeout",
                "TimeLimitExceeded",  # Celery's own, on a run killed at the hard limit
            )
            return {"state": "timed_out" if timed_out else "failed", "error_type": error_type}
        return None

    async def admit(self, calls: Sequence[TaskCall]) -> Admission:
        if not self._accepting:
            raise BackendUnavailable(names.REASON_SHUTDOWN, "the service is shutting down")
        published = await run_in_threadpool(self._publish, calls)
        if len(published) < len(calls):
            raise BackendUnavailable(
                names.REASON_ENQUEUE_ERROR,
                f"the broker did not accept {len(calls) - len(published)} task(s)",
                accepted=published,
            )
        return Admission(calls, lambda _: None)

    def _publish(self, calls: Sequence[TaskCall]) -> list[str]:
        published: list[str] = []
        for call in calls:
            envelope = call.envelope
            try:
                self._send(envelope)
            except Exception as exc:
                self.log.error(
                    "broker.publish_failed",
                    task=envelope.name,
                    task_id=envelope.id,
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
                break
            published.append(envelope.id)
            self.runner.accepted(envelope)
        return published

    def _send(self, envelope: TaskEnvelope) -> None:
        """Publish ``envelope`` in a PRODUCER span (child of the request's span), whose context
        travels in the message: the worker's run span is its child, or links to it."""
        with self.runner.tracer.start_as_current_span(
            f"{names.PUBLISH_SPAN_PREFIX} {self.queue}",
            context=propagate.extract(envelope.trace_context),
            kind=SpanKind.PRODUCER,
            attributes={
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.name,
                names.ATTR_MESSAGING_SYSTEM: "celery",
                names.ATTR_MESSAGING_DESTINATION: self.queue,
            },
        ):
            message = asdict(envelope) | {"trace_context": current_trace_context()}
            self.app.send_task(RUN_TASK, args=[message], task_id=envelope.id, queue=self.queue)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            await self._refresh()

    async def _refresh(self) -> None:
        depth, oldest, ok = await run_in_threadpool(self._queue_state)
        self._broker_ok = ok
        self.runner.metrics.queue_depth.labels(self.name, self.queue).set(depth)
        self.runner.metrics.oldest_pending.labels(self.name, self.queue).set(oldest)

    def _queue_state(self) -> tuple[int, float, bool]:
        """(depth, enqueue time of the oldest waiting task or 0, broker reachable)."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=1)
                client = getattr(connection.default_channel, "client", None)
                if client is None:  # not Redis: depth unknown
                    return 0, 0.0, True
                depth = int(client.llen(self.queue))
                raw = client.lindex(self.queue, -1) if depth else None
                return depth, _enqueued_at(raw), True
        except Exception as exc:
            self.log.warning("broker.unreachable", error_type=type(exc).__name__, error=str(exc))
            return 0, 0.0, False


def _enqueued_at(raw: bytes | None) -> float:
    """The ``enqueued_at`` of a kombu Redis message (JSON with a base64 JSON body)."""
    if not raw:
        return 0.0
    try:
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        return float(body[0][0]["enqueued_at"])
    except (ValueError, KeyError, IndexError, TypeError):
        return 0.0


class WorkerRuntime:
    """What a worker process runs tasks with; built once, in the process that runs them.

    ``celery_time_limits`` (prefork pool): the body runs in this thread and Celery's soft time
    limit interrupts it (``SoftTimeLimitExceeded``), reported as ``timeout``; the hard limit
    kills a body that survives it. Otherwise (threads pool, which ignores Celery's limits) the
    body runs in a thread of its own, is reported ``timeout`` at the deadline, and keeps its
    Celery slot until it returns (like in-process)."""

    def __init__(
        self,
        runner: TaskRunner,
        resolve: Callable[[str], TaskFunction],
        *,
        celery_time_limits: bool = False,
    ) -> None:
        self.runner = runner
        self.resolve = resolve
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
            self.runner.metrics.redelivered.labels(envelope.name, self.runner.backend).inc()
            self.runner.log.warning(
                names.EVENT_REDELIVERED, task=envelope.name, task_id=envelope.id
            )
        func = self.resolve(envelope.name)
        retry_on = TRANSIENT_ERRORS if retry else ()
        bare = replace(envelope, args=(), kwargs={})
        if self.celery_time_limits:
            return _summary(
                self.runner.run_sync(bare, self._limited(func, envelope), retry_on=retry_on)
            )
        body = _Body(func, envelope.args, envelope.kwargs)

        def call() -> None:
            body.start()
            body.join(self.runner.timeout)
            if body.is_alive():
                raise TaskTimeout(f"task exceeded its {self.runner.timeout:g}s timeout")
            body.reraise()

        try:
            run = self.runner.run_sync(bare, call, retry_on=retry_on)
        except TaskTimeout:
            report(TIMED_OUT)
            t0 = time.perf_counter()
            body.join()
            self.runner.log.warning(
                names.EVENT_OVERRAN,
                task=envelope.name,
                task_id=envelope.id,
                overran_seconds=time.perf_counter() - t0,
            )
            raise
        return _summary(run)

    def _limited(self, func: TaskFunction, envelope: TaskEnvelope) -> Callable[[], None]:
        """``func`` with Celery's soft time limit reported as this backend's timeout."""

        def call() -> None:
            try:
                func(*envelope.args, **envelope.kwargs)
            except SoftTimeLimitExceeded as exc:
                raise TaskTimeout(f"task exceeded its {self.runner.timeout:g}s timeout") from exc

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
