"""The in-process backend driven directly: its concurrency limit, all-or-nothing admission and
the drain at shutdown."""

import asyncio
import threading
import time
from typing import Any

import pytest

from observability.backends.inprocess import InProcessBackend
from observability.tasks.admission import BackendUnavailable, BacklogFull
from observability.tasks.batch import TaskBatch
from tests.support.recorder import Harness


def batch_of(count: int, func: Any, *args: Any) -> TaskBatch:
    batch = TaskBatch()
    for _ in range(count):
        batch.add_task(func, *args)
    return batch


def run_backend(backend: InProcessBackend, body: Any) -> Any:
    async def main() -> Any:
        await backend.start()
        try:
            return await body()
        finally:
            await backend.drain(1.0)

    return asyncio.run(main())


def test_concurrency_limit_and_failures_do_not_stop_others() -> None:
    """At most `concurrency` runs at once; one failing task does not stop the rest."""
    harness = Harness()
    backend = InProcessBackend(harness.recorder, concurrency=3, backlog=100, timeout=5.0)
    lock = threading.Lock()
    running = peak = 0
    done: list[int] = []
    first_three = threading.Barrier(3, timeout=30)  # the first runs all wait for each other

    def work(i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if i < 3:
            first_three.wait()
        with lock:
            running -= 1
        if i == 0:
            raise RuntimeError("first one fails")
        done.append(i)

    async def body() -> None:
        batch = TaskBatch()
        for i in range(20):
            batch.add_task(work, i)
        (await backend.admit(batch.calls)).release()
        while harness.value("background_task_finished_total", task="work", outcome="success") < 19:
            await asyncio.sleep(0.01)

    run_backend(backend, body)
    assert peak == 3
    assert sorted(done) == list(range(1, 20))
    assert harness.value("background_task_finished_total", task="work", outcome="failure") == 1


def test_admission_is_all_or_nothing() -> None:
    """A batch that does not fit the backlog is refused whole; nothing is half-accepted."""
    harness = Harness()
    backend = InProcessBackend(harness.recorder, concurrency=1, backlog=3, timeout=5.0)

    async def body() -> None:
        admission = await backend.admit(batch_of(2, time.sleep, 0).calls)
        with pytest.raises(BacklogFull):
            await backend.admit(batch_of(2, time.sleep, 0).calls)
        assert harness.value("background_task_queue_depth", queue="default") == 2
        admission.release()

    run_backend(backend, body)
    assert harness.value("background_task_enqueued_total", task="sleep") == 2


def test_drain_drops_what_never_ran_and_refuses_new_work() -> None:
    """After the grace period, pending tasks are dropped with reason shutdown; no new work."""
    harness = Harness()
    backend = InProcessBackend(harness.recorder, concurrency=1, backlog=100, timeout=5.0)

    async def block() -> None:
        await asyncio.Event().wait()  # until cancelled

    async def body() -> None:
        (await backend.admit(batch_of(5, block).calls)).release()
        while harness.value("background_task_in_progress", task="block") < 1:
            await asyncio.sleep(0.01)
        await backend.drain(0.1)
        with pytest.raises(BackendUnavailable):
            await backend.admit(TaskBatch().calls)

    run_backend(backend, body)
    assert harness.value("background_task_dropped_total", task="block", reason="shutdown") == 4
    assert harness.value("background_task_finished_total", task="block", outcome="failure") == 1
    assert harness.value("background_task_queue_depth", queue="default") == 0
    assert not backend.ready()
