"""The in-process backend: a bounded executor owned by the app's lifespan."""

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from observability import names
from observability.dispatch import Admission, BackendUnavailable, BacklogFull, TaskCall
from observability.logs import get_logger
from observability.runner import TaskRunner

QUEUE = "default"


class InProcessBackend:
    """Runs at most ``concurrency`` tasks at once, keeps at most ``backlog`` waiting, and on
    shutdown lets the backlog drain for a grace period, counting whatever never ran."""

    name = "inprocess"

    def __init__(self, runner: TaskRunner, *, concurrency: int, backlog: int) -> None:
        self.runner = runner
        self.metrics = runner.metrics
        self.concurrency = concurrency
        self.backlog = backlog
        self._pending: dict[str, TaskCall] = {}
        self._queue: asyncio.Queue[TaskCall] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0
        self._accepting = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.log = get_logger("observability.inprocess", backend=self.name)
        self.metrics.declare_queue(self.name, QUEUE)
        self.metrics.capacity.labels(self.name).set(concurrency)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="task")
        self._workers = [
            asyncio.create_task(self._work(), name=f"task-worker-{i}")
            for i in range(self.concurrency)
        ]
        self._accepting = True

    def ready(self) -> bool:
        return self._accepting

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, grace: float) -> None:
        """Stop accepting, wait up to ``grace`` seconds for the backlog and the runs under way,
        then cancel what is left and count every task that never ran as dropped."""
        self.stop_accepting()
        if self._closed:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            self.log.warning(
                "backend.drain_timeout",
                grace_seconds=grace,
                pending=len(self._pending),
                running=self._running,
            )
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for call in list(self._pending.values()):
            self._forget(call.envelope.id)
            self.runner.dropped(call.envelope, names.REASON_SHUTDOWN, accepted=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        """The journal knows everything of in-process tasks: nothing to add."""
        return None

    # -- admission ----------------------------------------------------------------------------

    async def admit(self, calls: Sequence[TaskCall]) -> Admission:
        """Reserve backlog room for all ``calls`` or none; they start once released."""
        if not self._accepting:
            raise BackendUnavailable(names.REASON_SHUTDOWN, "the service is shutting down")
        if len(self._pending) + len(calls) > self.backlog:
            raise BacklogFull(f"backlog is full ({self.backlog} tasks waiting)")
        for call in calls:
            self._pending[call.envelope.id] = call
            self.runner.accepted(call.envelope)
        self._update_queue_gauges()
        return Admission(calls, self._release)

    def _release(self, calls: Sequence[TaskCall]) -> None:
        if not self._closed:  # after the drain every pending task was counted as dropped
            for call in calls:
                self._queue.put_nowait(call)

    # -- running ------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._executor is not None
        while True:
            call = await self._queue.get()
            if self._closed or call.envelope.id not in self._pending:
                continue
            self._running += 1
            self._forget(call.envelope.id)
            try:
                await self.runner.run_async(call.envelope, call.func, self._executor)
            finally:
                self._running -= 1
                self._check_idle()

    def _forget(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        self._update_queue_gauges()

    def _check_idle(self) -> None:
        if not self._pending and self._running == 0:
            self._idle.set()

    def _update_queue_gauges(self) -> None:
        self.metrics.queue_depth.labels(self.name, QUEUE).set(len(self._pending))
        oldest = next(iter(self._pending.values()), None)
        self.metrics.oldest_pending.labels(self.name, QUEUE).set(
            oldest.envelope.enqueued_at if oldest else 0.0
        )
        if self._pending:
            self._idle.clear()
        else:
            self._check_idle()
