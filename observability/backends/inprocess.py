"""The in-process backend: a bounded set of run slots owned by the app's lifespan.

Each slot is a thread that takes the next released task from a FIFO and runs it right there:
a plain function is called in the slot thread; a coroutine function is handed to the event
loop and the slot waits for it (one concurrency limit for both). The event loop itself only
admits and releases tasks, so a task costs it no thread round trip, no future and no timer;
one watchdog on the loop reports runs that pass the timeout."""

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from observability import names
from observability.tasks.admission import Admission, BackendUnavailable, BacklogFull
from observability.tasks.batch import TaskCall
from observability.tasks.execution import await_coroutine, call_in_thread
from observability.tasks.function import is_async_callable
from observability.tasks.recorder import Recorder
from observability.tasks.retry import RetryPolicy
from observability.tasks.run import Run

QUEUE = "default"
DRAIN_POLL_SECONDS = 0.02


class InProcessBackend:
    """Runs at most ``concurrency`` tasks at once, keeps at most ``backlog`` waiting, and on
    shutdown lets the backlog drain for a grace period, counting whatever never ran."""

    name = "inprocess"

    def __init__(
        self,
        recorder: Recorder,
        *,
        concurrency: int,
        backlog: int,
        timeout: float,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.recorder = recorder
        self.retry = retry or RetryPolicy()
        self.concurrency = concurrency
        self.backlog = backlog
        self.timeout = timeout
        self._lock = threading.Lock()  # guards _pending and _running (slots and loop use them)
        self._pending: dict[str, TaskCall] = {}  # accepted, not started, in admission order
        # one entry per run under way (a retried task's next run is another): (run, loop future)
        self._running: dict[int, tuple[Run | None, Any]] = {}
        self._released: queue.SimpleQueue[TaskCall | None] = queue.SimpleQueue()
        self._slots: list[threading.Thread] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._closed = False
        recorder.queue_declared(QUEUE, capacity=concurrency)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = [
            threading.Thread(target=self._slot, name=f"task-slot-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for slot in self._slots:
            slot.start()
        self._watchdog = asyncio.create_task(self._watch(), name="task-watchdog")
        self._accepting = True

    def ready(self) -> bool:
        return self._accepting

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, grace: float) -> None:
        """Stop accepting, wait up to ``grace`` seconds for the backlog and the runs under way,
        then count every task that never ran as dropped and report the runs still under way as
        failed (a thread can't be stopped: it goes on, but its result no longer counts)."""
        self.stop_accepting()
        if self._closed:
            return
        deadline = time.monotonic() + grace
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if self._busy():
            self.recorder.drain_timed_out(grace, len(self._pending), len(self._running))
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        with self._lock:
            never_ran = list(self._pending.values())
            self._pending.clear()
            under_way = list(self._running.values())
            self._update_queue_gauges()
        for call in never_ran:
            self.recorder.dropped(call.envelope, names.REASON_SHUTDOWN, accepted=True)
        for run, future in under_way:
            if future is not None:
                future.cancel()  # a coroutine: cancelled, recorded by await_coroutine
            elif run is not None:
                self.recorder.finished(
                    run, names.OUTCOME_FAILURE, asyncio.CancelledError("shutdown")
                )
        for _ in self._slots:
            self._released.put(None)

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        """The journal knows everything of in-process tasks: nothing to add."""
        return None

    # -- admission ----------------------------------------------------------------------------

    async def admit(self, calls: Sequence[TaskCall]) -> Admission:
        """Reserve backlog room for all ``calls`` or none; they start once released."""
        if not self._accepting:
            raise BackendUnavailable(names.REASON_SHUTDOWN, "the service is shutting down")
        with self._lock:
            if len(self._pending) + len(calls) > self.backlog:
                raise BacklogFull(f"backlog is full ({self.backlog} tasks waiting)")
            for call in calls:
                self._pending[call.envelope.id] = call
            self._update_queue_gauges()
        for call in calls:
            self.recorder.accepted(call.envelope)
        return Admission(calls, self._release)

    def _release(self, calls: Sequence[TaskCall]) -> None:
        for call in calls:
            self._released.put(call)

    # -- running (in the slot threads) --------------------------------------------------------

    def _slot(self) -> None:
        while (call := self._released.get()) is not None:
            task_id = call.envelope.id
            with self._lock:
                if self._closed or self._pending.pop(task_id, None) is None:
                    continue  # dropped by the drain
                self._running[id(call)] = (None, None)
                self._update_queue_gauges()
            try:
                self._run(call)
            finally:
                with self._lock:
                    self._running.pop(id(call), None)

    def _run(self, call: TaskCall) -> None:
        if is_async_callable(call.func):
            assert self._loop is not None
            future = asyncio.run_coroutine_threadsafe(
                await_coroutine(
                    self.recorder,
                    call.envelope,
                    call.func,
                    self.timeout,
                    call.parent,
                    (self.retry, functools.partial(self._retry_later, call)),
                ),
                self._loop,
            )
            with self._lock:
                self._running[id(call)] = (None, future)
            # cancelled by the drain: await_coroutine has recorded it already
            with contextlib.suppress(BaseException):
                future.result()
            return
        retry = (self.retry, functools.partial(self._retry_later, call))
        started = functools.partial(self._started, id(call))
        call_in_thread(self.recorder, call.envelope, call.func, call.parent, started, retry)

    def _retry_later(self, call: TaskCall, delay: float) -> None:
        """Back into the backlog now, released to a slot in ``delay`` seconds: the wait holds
        no slot, and counts as waiting (queue depth) like any accepted task."""
        envelope = replace(
            call.envelope, enqueued_at=time.time() + delay, retries=call.envelope.retries + 1
        )
        again = replace(call, envelope=envelope)
        with self._lock:
            closed = self._closed or self._loop is None
            if not closed:
                self._pending[envelope.id] = again
                self._update_queue_gauges()
        if closed:
            self.recorder.dropped(envelope, names.REASON_SHUTDOWN, accepted=True)
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._release_later, delay, again)

    def _release_later(self, delay: float, call: TaskCall) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, self._release, (call,))

    def _started(self, key: int, run: Run) -> None:
        with self._lock:
            self._running[key] = (run, None)

    # -- on the event loop --------------------------------------------------------------------

    async def _watch(self) -> None:
        """Report runs of plain functions that passed the timeout (their threads go on)."""
        interval = min(0.1, self.timeout / 10)
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            with self._lock:
                runs = [run for run, _ in self._running.values() if run is not None]
            for run in runs:
                if run.outcome is None and now - run.started_perf >= self.timeout:
                    self.recorder.finished(run, names.OUTCOME_TIMEOUT)

    def _busy(self) -> bool:
        return bool(self._pending or self._running)

    def _update_queue_gauges(self) -> None:
        """Under ``_lock``."""
        oldest = next(iter(self._pending.values()), None)
        self.recorder.queue_changed(
            QUEUE, len(self._pending), oldest.envelope.enqueued_at if oldest else 0.0
        )
