"""The tutorial's task functions, writing to the file sinks in ``NOTIFY_DATA_DIR``."""

from pathlib import Path

from observability.logs.redaction import mask
from observability.tasks.failure import FailureReport
from observability.tasks.function import TaskFunction, task_name
from service.sinks import LineFile

LOG_FILE = "log.txt"
SMS_LOG_FILE = "sms_log.txt"
ERROR_LOG_FILE = "error.log"
SAFE_ENTRY = "安全日志条目\n"


class NotificationService:
    """Holds the sinks of one data directory; its bound methods are tasks, and so is its static
    method ``sms_task`` (as in the tutorial)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log = LineFile(data_dir / LOG_FILE)
        self.errors = LineFile(data_dir / ERROR_LOG_FILE)

    def write_log(self, message: str) -> None:
        """Append ``message`` to ``log.txt`` as one line."""
        self.log.append(message)

    def safe_write_log(self, message: str) -> None:
        """The tutorial's guarded writer. Its ``except`` that wrote ``error.log`` now lives in the
        recorder, which does it for every task (see ``report_failure``), and the failure is counted
        instead of swallowed."""
        self.log.append(message)

    @staticmethod
    def sms_task(phone: str, msg: str, data_dir: str = ".") -> None:
        """Append ``{phone}:{msg}`` to ``sms_log.txt`` in ``data_dir``."""
        LineFile(Path(data_dir) / SMS_LOG_FILE).append(f"{phone}:{msg}\n")

    def tasks(self) -> dict[str, TaskFunction]:
        """The task table, by the name each task is known by (metrics, messages)."""
        return {
            task_name(func): func for func in (self.write_log, self.sms_task, self.safe_write_log)
        }

    def report_failure(self, report: FailureReport) -> None:
        """The recorder's failure sink: one ``Log Error: {error}`` line in ``error.log`` per failed
        or timed-out run, tagged with the task and its id."""
        self.errors.append(
            f"Log Error: {report.error_type}: {mask(report.error)} "
            f"(task={report.task} id={report.task_id} outcome={report.outcome})"
        )

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
