"""The recorder driven directly: what each lifecycle report records, and only once."""

from opentelemetry.trace import StatusCode

from observability.tasks.envelope import TaskEnvelope
from observability.tasks.journal import TaskState
from tests.support.recorder import Harness


def test_killed_records_a_timeout_without_touching_in_progress() -> None:
    """killed() records a timeout (span, counters, report) but leaves in_progress alone."""
    harness = Harness(timeout=2.0)
    envelope = TaskEnvelope("job")
    harness.recorder.accepted(envelope)
    harness.recorder.killed(envelope, ran_for=3.0, error=TimeoutError("hard time limit"))
    assert harness.value("background_task_finished_total", task="job", outcome="timeout") == 1
    assert harness.value("background_task_duration_seconds_count", task="job", outcome="timeout")
    assert harness.value("background_task_in_progress", task="job") == 0
    assert harness.value("background_task_started_total", task="job") == 0  # the dead one's
    assert (
        harness.value("background_task_failures_total", task="job", exception="TimeoutError") == 1
    )
    (span,) = harness.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.start_time is not None and span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 2.9  # begun ran_for seconds ago
    (report,) = harness.reports
    assert report.outcome == "timeout" and report.task_id == envelope.id
    record = harness.journal.get(envelope.id)
    assert record is not None and record.state is TaskState.TIMED_OUT


def test_finished_twice_records_once() -> None:
    """A second finished() for the same run records nothing and returns False."""
    harness = Harness()
    envelope = TaskEnvelope("job")
    harness.recorder.accepted(envelope)
    run = harness.recorder.started(envelope)
    assert harness.value("background_task_in_progress", task="job") == 1
    assert harness.recorder.finished(run, "timeout") is True
    assert harness.recorder.finished(run, "success") is False
    assert harness.value("background_task_finished_total", task="job", outcome="timeout") == 1
    assert harness.value("background_task_finished_total", task="job", outcome="success") == 0
    assert harness.value("background_task_in_progress", task="job") == 0
    assert len(harness.exporter.get_finished_spans()) == 1 and len(harness.reports) == 1
    record = harness.journal.get(envelope.id)
    assert record is not None and record.state is TaskState.TIMED_OUT


def test_refused_drop_counts_refused_and_dropped() -> None:
    """dropped(accepted=False) counts the task in both dropped_total and refused_total."""
    harness = Harness()
    envelope = TaskEnvelope("job")
    harness.recorder.dropped(envelope, "backlog_full")
    labels = {"task": "job", "reason": "backlog_full"}
    assert harness.value("background_task_dropped_total", **labels) == 1
    assert harness.value("background_task_refused_total", **labels) == 1
    record = harness.journal.get(envelope.id)
    assert record is not None and record.state is TaskState.DROPPED
    assert record.drop_reason == "backlog_full"


def test_accepted_drop_counts_only_dropped() -> None:
    """dropped(accepted=True) counts the task in dropped_total only, not refused_total."""
    harness = Harness()
    envelope = TaskEnvelope("job")
    harness.recorder.accepted(envelope)
    harness.recorder.dropped(envelope, "shutdown", accepted=True)
    labels = {"task": "job", "reason": "shutdown"}
    assert harness.value("background_task_dropped_total", **labels) == 1
    assert harness.value("background_task_refused_total", **labels) == 0
    record = harness.journal.get(envelope.id)
    assert record is not None and record.state is TaskState.DROPPED
