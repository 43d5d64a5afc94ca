"""The Celery backend, API side: each accepted task is published to the broker before the
response (a broker failure is a 503 with ``reason=enqueue_error``, never a silent loss), the
queue is watched on Redis, and ``GET /tasks/{id}`` asks the result backend what the workers
reported."""

import asyncio
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from starlette.concurrency import run_in_threadpool

from observability import names
from observability.backends.celery_message import (
    TIMED_OUT,
    celery_name,
    masked_reprs,
    message_of,
)
from observability.backends.redis_queue import QueueState, read_queue
from observability.tasks.admission import Admission, BackendUnavailable
from observability.tasks.batch import TaskCall
from observability.tasks.journal import TaskState
from observability.tasks.recorder import Recorder
from observability.tracing.destination import Destination

POLL_SECONDS = 2.0
# ours, and Celery's at the hard limit; by class name only: the worker stores a stand-in of
# the run's error that keeps its name (observability/backends/celery_error.py)
_TIMEOUT_ERRORS = ("TaskTimeout", "HardTimeLimitExceeded", "TimeLimitExceeded")


class CeleryBackend:
    name = "celery"

    def __init__(self, recorder: Recorder, app: Celery, queue: str) -> None:
        self.recorder = recorder
        self.app = app
        self.queue = queue
        self.destination = Destination.of(str(app.conf.broker_url or ""), queue)
        self._accepting = False
        self._broker_ok = False
        self._poller: asyncio.Task[None] | None = None
        recorder.queue_declared(queue)

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
            self.recorder.lookup_failed(task_id, exc)
            return None
        if state == "STARTED":
            return {"state": TaskState.RUNNING}
        if state == "SUCCESS" and isinstance(value, dict):
            return _succeeded(value)
        if state == TIMED_OUT:
            return {"state": TaskState.TIMED_OUT, "error_type": "TaskTimeout"}
        if state == "RETRY":
            return {"state": TaskState.QUEUED, "error_type": type(value).__name__}
        if state == "FAILURE":
            error_type = type(value).__name__
            failed = TaskState.TIMED_OUT if error_type in _TIMEOUT_ERRORS else TaskState.FAILED
            return {"state": failed, "error_type": error_type}
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
                with self.recorder.publishing(envelope, self.destination):
                    message = message_of(envelope)  # the trace context of the publish span
                    self.app.send_task(
                        celery_name(envelope.name),
                        args=[message],
                        task_id=envelope.id,
                        queue=self.queue,
                        **masked_reprs(message),
                    )
            except Exception as exc:
                self.recorder.publish_failed(envelope, exc)
                break
            published.append(envelope.id)
            self.recorder.accepted(envelope)
        return published

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            await self._refresh()

    async def _refresh(self) -> None:
        state = await run_in_threadpool(self._queue_state)
        self._broker_ok = state.reachable
        self.recorder.queue_changed(self.queue, state.depth, state.oldest_enqueued_at)

    def _queue_state(self) -> QueueState:
        try:
            return read_queue(self.app, self.queue)
        except Exception as exc:
            self.recorder.broker_unreachable(exc)
            return QueueState(0, 0.0, False)


def _succeeded(value: dict[str, Any]) -> dict[str, Any]:
    """The lookup of a run that succeeded, from the summary the worker stored."""
    started = float(value["started_at"])
    duration = float(value["duration_seconds"])
    return {
        "state": TaskState.SUCCEEDED,
        "started_at": started,
        "finished_at": started + duration,
        "duration_seconds": duration,
        "queue_wait_seconds": value.get("queue_wait_seconds"),
    }
