"""The executors (``await_coroutine``, ``call_in_thread``) with a recorder of their own: timeouts,
failures, the run's span; and how a task is named."""

import asyncio
import time

import pytest
from opentelemetry.trace import StatusCode

from observability.tasks.batch import TaskBatch
from observability.tasks.envelope import TaskEnvelope
from observability.tasks.execution import await_coroutine, call_in_thread
from observability.tasks.journal import TaskState
from tests.support.recorder import Harness


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
