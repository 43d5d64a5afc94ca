"""The recorder, the executors and the in-process backend, driven directly."""

import asyncio
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from observability.backends.inprocess import InProcessBackend
from observability.metrics.tasks import TaskMetrics
from observability.tasks.admission import BackendUnavailable, BacklogFull
from observability.tasks.batch import TaskBatch
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.execution import await_coroutine, call_in_thread
from observability.tasks.failure import FailureReport
from observability.tasks.journal import TaskJournal, TaskState
from observability.tasks.recorder import Recorder


class Harness:
    def __init__(self, timeout: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reports: list[FailureReport] = []
        self.journal = TaskJournal(100)
        self.timeout = timeout
        self.recorder = Recorder(
            backend="inprocess",
            metrics=TaskMetrics(self.registry),
            tracer_provider=provider,
            timeout=timeout,
            journal=self.journal,
            failure_sink=self.reports.append,
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"backend": "inprocess", **labels}) or 0.0


def test_async_task_timeout_cancels_the_coroutine() -> None:
    """An async run past the timeout is cancelled and reported as timeout."""
    harness = Harness(timeout=0.05)
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    outcome = asyncio.run(
        await_coroutine(harness.recorder, TaskEnvelope("slow"), slow, harness.timeout)
    )
    assert outcome == "timeout" and cancelled == [True]
    assert harness.value("background_task_finished_total", task="slow", outcome="timeout") == 1
    assert (
        harness.value("background_task_failures_total", task="slow", exception="TimeoutError") == 1
    )
    assert harness.reports[0].outcome == "timeout"
    (span,) = harness.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


def test_task_raising_timeout_error_itself_is_a_failure() -> None:
    """A TimeoutError raised by the task (not the deadline) is a failure, not a timeout."""
    harness = Harness()

    async def raises() -> None:
        raise TimeoutError("upstream")

    run = await_coroutine(harness.recorder, TaskEnvelope("t"), raises, harness.timeout)
    assert asyncio.run(run) == "failure"


def test_span_matches_run_and_records_exception() -> None:
    """The span spans the run exactly, carries the contract attributes and the exception."""
    harness = Harness()

    def boom(x: int) -> None:
        time.sleep(0.02)
        raise ValueError(f"bad {x} for bob@example.com")

    envelope = TaskEnvelope("boom", (1,))
    harness.recorder.accepted(envelope)
    call_in_thread(harness.recorder, envelope, boom)
    (span,) = harness.exporter.get_finished_spans()
    record = harness.journal.get(envelope.id)
    assert record is not None and record.state is TaskState.FAILED
    assert span.start_time is not None and span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(
        record.duration_seconds, abs=0.005
    )
    assert span.attributes is not None
    assert span.attributes["background_task.outcome"] == "failure"
    (event,) = span.events
    assert event.name == "exception" and event.attributes is not None
    assert "bob@example.com" not in str(event.attributes["exception.message"])
    assert harness.value("background_task_failures_total", task="boom", exception="ValueError") == 1


def test_bound_methods_and_partials_are_named_by_function() -> None:
    """Bound methods, static methods and partials are known by their function name."""
    import functools

    class Service:
        def notify(self) -> None: ...

        @staticmethod
        def sms(x: int) -> None: ...

    batch = TaskBatch()
    batch.add_task(Service().notify)
    batch.add_task(Service.sms, 1)
    batch.add_task(functools.partial(Service.sms, 2))
    assert [call.envelope.name for call in batch.calls] == ["notify", "sms", "sms"]


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


def test_journal_forgets_oldest() -> None:
    """The journal keeps only its capacity of most recent tasks."""
    journal = TaskJournal(2)
    for i in range(3):
        journal.queued(str(i), "t", "inprocess", 0.0)
    assert journal.get("0") is None and journal.get("2") is not None and len(journal) == 2
