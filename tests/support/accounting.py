"""The accounting invariant: for each task, ``enqueued == succeeded + failed + timed_out +
dropped + pending``, read from ``/metrics`` and from the JSON logs. ``dropped`` here is what was
accepted and then dropped (the drain's end): ``dropped_total - refused_total``; tasks refused
at the door (503: ``backlog_full``, or ``shutdown`` while draining) were never enqueued, and are
checked against the 503 answers instead. ``task.dropped`` log lines say which (``accepted``)."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import wait_until

OUTCOME_FIELDS = {"success": "succeeded", "failure": "failed", "timeout": "timed_out"}
EVENT_FIELDS = {
    "task.enqueued": "enqueued",
    "task.succeeded": "succeeded",
    "task.failed": "failed",
    "task.timed_out": "timed_out",
}


@dataclass
class Ledger:
    """What became of one task's runs."""

    enqueued: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by reason, refused or not
    refused: Counter[str] = field(default_factory=Counter)  # by reason: 503, never enqueued
    in_progress: int = 0

    @property
    def accepted_then_dropped(self) -> int:
        return self.dropped.total() - self.refused.total()

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.timed_out + self.accepted_then_dropped


@dataclass
class Books:
    """Ledgers by task name, and the backend's queue depth (tasks accepted, not started)."""

    ledgers: dict[str, Ledger]
    queue_depth: int = 0

    def pending(self) -> int:
        return self.queue_depth + sum(ledger.in_progress for ledger in self.ledgers.values())

    def unbalanced(self) -> dict[str, Ledger]:
        """Tasks whose ledger does not balance, counting the queue as pending (the queue
        depth is per backend, so the balance is checked task by task once nothing waits and
        in total while something does)."""
        total_missing = sum(
            ledger.enqueued - ledger.ended - ledger.in_progress for ledger in self.ledgers.values()
        )
        if total_missing != self.queue_depth:
            return dict(self.ledgers)
        if self.queue_depth == 0:
            return {
                name: ledger
                for name, ledger in self.ledgers.items()
                if ledger.enqueued != ledger.ended + ledger.in_progress
            }
        return {}


def books_from_metrics(text: str, backend: str = "inprocess") -> Books:
    ledgers: dict[str, Ledger] = {}
    depth = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("backend") != backend:
                continue
            if sample.name == "background_task_queue_depth":
                depth += sample.value
                continue
            task = labels.get("task")
            if task is None:
                continue
            ledger = ledgers.setdefault(task, Ledger())
            value = int(sample.value)
            if sample.name == "background_task_enqueued_total":
                ledger.enqueued = value
            elif sample.name == "background_task_finished_total":
                name = OUTCOME_FIELDS.get(labels["outcome"])
                if name is not None:
                    setattr(ledger, name, value)
            elif sample.name == "background_task_dropped_total":
                ledger.dropped[labels["reason"]] = value
            elif sample.name == "background_task_refused_total":
                ledger.refused[labels["reason"]] = value
            elif sample.name == "background_task_in_progress":
                ledger.in_progress = value
    return Books(ledgers, int(depth))


def books_from_logs(logs: list[dict[str, Any]]) -> Books:
    """Ledgers from the task events (nothing is pending once the process is gone). Without
    ``task.enqueued`` lines (``NOTIFY_LOG_TASK_LIFECYCLE`` off, the default) a task's enqueued
    count is its ends: the logs alone then can't miss a task, but compared with the metrics'
    enqueued counter they show whether every enqueued task has its terminal line."""
    ledgers: dict[str, Ledger] = {}
    lifecycle = any(line.get("event") == "task.enqueued" for line in logs)
    for line in logs:
        event = line.get("event")
        if event == "task.dropped":
            ledger = ledgers.setdefault(line["task"], Ledger())
            ledger.dropped[line["reason"]] += 1
            if not line["accepted"]:
                ledger.refused[line["reason"]] += 1
        elif event in EVENT_FIELDS and line.get("outcome") != "retry":  # not an end: runs again
            ledger = ledgers.setdefault(line["task"], Ledger())
            name = EVENT_FIELDS[event]
            setattr(ledger, name, getattr(ledger, name) + 1)
    if not lifecycle:
        for ledger in ledgers.values():
            ledger.enqueued = ledger.ended
    return Books(ledgers)


def same_counts(a: Books, b: Books) -> bool:
    """Both books count the same enqueued, outcomes and drops for every task."""
    names = {n for n, ledger in a.ledgers.items() if ledger.enqueued or ledger.dropped.total()}
    names |= {n for n, ledger in b.ledgers.items() if ledger.enqueued or ledger.dropped.total()}
    for name in names:
        x, y = a.ledgers.get(name, Ledger()), b.ledgers.get(name, Ledger())
        if (x.enqueued, x.succeeded, x.failed, x.timed_out) != (
            y.enqueued,
            y.succeeded,
            y.failed,
            y.timed_out,
        ):
            return False
        if +x.dropped != +y.dropped or +x.refused != +y.refused:
            return False
    return True


def assert_balanced(metrics_text: str, logs: list[dict[str, Any]] | None = None) -> Books:
    """The invariant holds in ``/metrics`` and, when ``logs`` are given, the logs count the
    same (both taken when nothing is pending, so they can be compared exactly)."""
    books = books_from_metrics(metrics_text)
    assert not books.unbalanced(), books
    if logs is not None:
        from_logs = books_from_logs(logs)
        assert not from_logs.unbalanced(), from_logs
        assert same_counts(books, from_logs), (books, from_logs)
    return books


class Observed(Protocol):
    def metrics(self, openmetrics: bool = False) -> str: ...
    def logs(self) -> list[dict[str, Any]]: ...


def wait_balanced(service: Observed, timeout: float = 30.0) -> Books:
    """Wait until nothing is pending, then ``assert_balanced`` on metrics and logs (retried
    until the deadline: a run's log line is written just after its counters move)."""

    def balanced() -> Books:
        text = service.metrics()
        books = books_from_metrics(text)
        if books.pending():
            raise AssertionError(f"still pending: {books}")
        return assert_balanced(text, service.logs())

    return wait_until(
        balanced, timeout, what="the books to balance", interval=0.1, ignore=(AssertionError,)
    )
