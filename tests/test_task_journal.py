"""The task journal behind ``GET /tasks/{task_id}``: its transitions and its capacity."""

import pytest

from observability.tasks.journal import TaskJournal, TaskState


def state(journal: TaskJournal, task_id: str) -> TaskState:
    record = journal.get(task_id)
    assert record is not None
    return record.state


def test_journal_forgets_oldest() -> None:
    """The journal keeps only its capacity of most recent tasks."""
    journal = TaskJournal(2)
    for i in range(3):
        journal.queued(str(i), "t", "inprocess", 0.0)
    assert journal.get("0") is None and journal.get("2") is not None and len(journal) == 2


def test_transitions_queued_running_finished() -> None:
    """A task goes queued -> running -> finished, each step recording its timestamps."""
    journal = TaskJournal(10)
    journal.queued("t1", "write_log", "inprocess", 100.0)
    record = journal.get("t1")
    assert record is not None
    assert state(journal, "t1") is TaskState.QUEUED
    assert (record.name, record.backend, record.enqueued_at) == ("write_log", "inprocess", 100.0)
    journal.running("t1", 101.0, 1.0)
    assert state(journal, "t1") is TaskState.RUNNING
    assert (record.started_at, record.queue_wait_seconds) == (101.0, 1.0)
    journal.finished("t1", "failure", 103.0, 2.0, "ValueError")
    assert state(journal, "t1") is TaskState.FAILED
    assert (record.finished_at, record.duration_seconds, record.error_type) == (
        103.0,
        2.0,
        "ValueError",
    )
    assert record.as_dict()["state"] == "failed"


def test_unknown_ids_are_ignored_but_dropped_ones_are_recorded() -> None:
    """running/finished of an unknown id change nothing; dropped records even an unknown id."""
    journal = TaskJournal(10)
    journal.running("ghost", 1.0, 0.0)
    journal.finished("ghost", "success", 2.0, 1.0, None)
    assert journal.get("ghost") is None and len(journal) == 0
    journal.dropped("refused", "sms_task", "inprocess", 5.0, "backlog_full", None)
    record = journal.get("refused")
    assert record is not None and record.state is TaskState.DROPPED
    assert (record.name, record.drop_reason, record.enqueued_at) == (
        "sms_task",
        "backlog_full",
        5.0,
    )


def test_dropped_after_queued_keeps_the_record() -> None:
    """Dropping an accepted task turns its record dropped, with the reason and error type."""
    journal = TaskJournal(10)
    journal.queued("t1", "write_log", "inprocess", 1.0)
    journal.dropped("t1", "write_log", "inprocess", 1.0, "shutdown", "CancelledError")
    record = journal.get("t1")
    assert record is not None and record.state is TaskState.DROPPED
    assert (record.drop_reason, record.error_type) == ("shutdown", "CancelledError")
    assert len(journal) == 1


def test_capacity_evicts_in_enqueue_order() -> None:
    """Past its capacity the journal evicts the earliest added records, dropped ones included."""
    journal = TaskJournal(3)
    journal.queued("a", "t", "inprocess", 0.0)
    journal.dropped("b", "t", "inprocess", 0.0, "backlog_full", None)
    journal.queued("c", "t", "inprocess", 0.0)
    journal.running("a", 1.0, 1.0)  # a transition does not refresh a record
    journal.queued("d", "t", "inprocess", 0.0)
    assert journal.get("a") is None
    assert [journal.get(i) is not None for i in "bcd"] == [True, True, True]
    journal.queued("e", "t", "inprocess", 0.0)
    assert journal.get("b") is None and len(journal) == 3


def test_state_after_each_outcome() -> None:
    """TaskState.after maps success, failure, timeout and retry to their states."""
    assert TaskState.after("success") is TaskState.SUCCEEDED
    assert TaskState.after("failure") is TaskState.FAILED
    assert TaskState.after("timeout") is TaskState.TIMED_OUT
    assert TaskState.after("retry") is TaskState.QUEUED  # a retried task waits again
    with pytest.raises(KeyError):
        TaskState.after("unknown")
