"""A run that did not succeed, as the recorder hands it to the application's failure sink
(the service appends it to ``error.log``)."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FailureReport:
    task: str
    task_id: str
    backend: str
    outcome: str
    error_type: str
    error: str


class FailureSink(Protocol):
    def __call__(self, report: FailureReport) -> None: ...
