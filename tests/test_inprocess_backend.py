"""The in-process backend driven directly: its concurrency limit, all-or-nothing admission,
retries and the drain at shutdown."""

import asyncio
import threading
import time
from typing import Any

import pytest

from observability.backends.inprocess import InProcessBackend
from observability.tasks.admission import BackendUnavailable, BacklogFull
from observability.tasks.batch import TaskBatch
from observability.tasks.retry import RetryPolicy, TransientError
from tests.support.polling import wait_until
from tests.support.recorder import Harness

FINISHED = "background_task_finished_total"
FAILURES = "background_task_failures_total"
DEPTH = "background_task_queue_depth"


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


def test_transient_failures_are_retried_until_success() -> None:
    """A task failing transiently runs again (outcome retry each time) until it succeeds."""
    harness = Harness()
    policy = RetryPolicy(max_retries=3, backoff=0.01, jitter=0.0)
    backend = InProcessBackend(
        harness.recorder, concurrency=2, backlog=10, timeout=5.0, retry=policy
    )
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise TransientError("server busy")

    async def body() -> None:
        (await backend.admit(batch_of(1, flaky).calls)).release()
        await asyncio.to_thread(
            wait_until, lambda: harness.value(FINISHED, task="flaky", outcome="success") == 1
        )

    run_backend(backend, body)
    assert len(runs) == 3
    assert harness.value(FINISHED, task="flaky", outcome="retry") == 2
    assert harness.value(FAILURES, task="flaky", exception="TransientError") == 2
    assert harness.value("background_task_enqueued_total", task="flaky") == 1
    assert [report.outcome for report in harness.reports] == ["retry", "retry"]


def test_retries_end_in_failure_and_other_errors_are_not_retried() -> None:
    """Retries stop at max_retries; a non-transient error fails at once."""
    harness = Harness()
    policy = RetryPolicy(max_retries=2, backoff=0.01, jitter=0.0)
    backend = InProcessBackend(
        harness.recorder, concurrency=2, backlog=10, timeout=5.0, retry=policy
    )

    def down() -> None:
        raise ConnectionRefusedError("nobody listens")

    def broken() -> None:
        raise ValueError("bad input")

    async def body() -> None:
        (await backend.admit(batch_of(1, down).calls + batch_of(1, broken).calls)).release()
        await asyncio.to_thread(
            wait_until, lambda: harness.value(FINISHED, task="down", outcome="failure") == 1
        )
        await asyncio.to_thread(
            wait_until, lambda: harness.value(FINISHED, task="broken", outcome="failure") == 1
        )

    run_backend(backend, body)
    assert harness.value(FINISHED, task="down", outcome="retry") == 2
    assert harness.value(FINISHED, task="broken", outcome="retry") == 0


def test_a_retry_waits_in_the_backlog_without_holding_a_slot() -> None:
    """While a retried task waits for its backoff, it counts as queued and the only slot runs
    other work; a drain before its turn drops it as accepted (counted, not lost)."""
    harness = Harness()
    policy = RetryPolicy(max_retries=1, backoff=3600.0, jitter=0.0)
    backend = InProcessBackend(
        harness.recorder, concurrency=1, backlog=10, timeout=5.0, retry=policy
    )

    def flaky() -> None:
        raise TransientError("server busy")

    def other() -> None:
        pass

    async def body() -> None:
        (await backend.admit(batch_of(1, flaky).calls)).release()
        await asyncio.to_thread(
            wait_until, lambda: harness.value(FINISHED, task="flaky", outcome="retry") == 1
        )
        assert harness.value(DEPTH, queue="default") == 1
        (await backend.admit(batch_of(1, other).calls)).release()
        await asyncio.to_thread(
            wait_until, lambda: harness.value(FINISHED, task="other", outcome="success") == 1
        )
        await backend.drain(0.0)

    run_backend(backend, body)
    assert harness.value("background_task_dropped_total", task="flaky", reason="shutdown") == 1
    assert harness.value(DEPTH, queue="default") == 0
