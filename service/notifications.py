"""The tutorial's task functions: each notification goes out through its channel (SMTP, an
HTTP SMS provider, or the tutorial's file line by default) and leaves its line in the file sinks
of ``NOTIFY_DATA_DIR`` once delivered."""

from collections.abc import Callable

from observability import FailureReport, delivery, names
from observability.logs.configuration import get_logger
from observability.logs.redaction import mask
from observability.tasks.function import TaskFunction, task_name
from service.channels.ledger import DeliveredLedger, MemoryLedger, RedisLedger
from service.channels.sms_http import HttpSmsChannel
from service.channels.smtp import SmtpChannel
from service.settings import Settings
from service.sinks import LineFile

LOG_FILE = "log.txt"
SMS_LOG_FILE = "sms_log.txt"
ERROR_LOG_FILE = "error.log"
SAFE_ENTRY = "安全日志条目\n"
DEFAULT_SUBJECT = "Notification"
FILE_CHANNEL = "file"


class NotificationService:
    """The channels and sinks of one configuration; its bound methods are the tasks."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self.log = LineFile(self.data_dir / LOG_FILE)
        self.sms_log = LineFile(self.data_dir / SMS_LOG_FILE)
        self.errors = LineFile(self.data_dir / ERROR_LOG_FILE)
        self.email = _smtp(settings) if settings.email_channel == "smtp" else None
        self.sms = _sms(settings) if settings.sms_channel == "http" else None
        ttl = settings.idempotency_ttl_seconds
        self.ledger: DeliveredLedger = (
            RedisLedger(settings.broker_url, ttl)
            if settings.task_backend == "celery"
            else MemoryLedger(ttl)
        )
        self.log_events = get_logger("service.notifications")

    def write_log(
        self, message: str, to: str | None = None, subject: str | None = None,
        body: str | None = None,
    ) -> None:  # fmt: skip
        """E-mail ``to`` (with the SMTP channel; ``body`` defaults to ``message``), then append
        ``message`` to ``log.txt`` as one line."""
        email = self.email
        if to is not None and email is not None:
            text = message.removesuffix("\n") if body is None else body

            def send(task_id: str) -> None:
                email.send(email.message(task_id, to, subject or DEFAULT_SUBJECT, text))

            if self._deliver("smtp", send):
                self.log.append(message)
            return
        self._append(self.log, message)

    def safe_write_log(self, message: str) -> None:
        """The tutorial's guarded writer. Its ``except`` that wrote ``error.log`` now lives in the
        recorder, which does it for every task (see ``report_failure``), and the failure is counted
        instead of swallowed."""
        self._append(self.log, message)

    def sms_task(self, phone: str, msg: str) -> None:
        """Send ``msg`` to ``phone`` (with the HTTP channel), then append ``{phone}:{msg}`` to
        ``sms_log.txt``."""
        sms = self.sms
        if sms is None:
            self._append(self.sms_log, f"{phone}:{msg}\n")
        elif self._deliver("http", lambda task_id: sms.send(task_id, phone, msg)):
            self.sms_log.append(f"{phone}:{msg}\n")

    def tasks(self) -> dict[str, TaskFunction]:
        """The task table, by the name each task is known by (metrics, messages)."""
        return {
            task_name(func): func for func in (self.write_log, self.sms_task, self.safe_write_log)
        }

    def report_failure(self, report: FailureReport) -> None:
        """The recorder's failure sink: one ``Log Error: {error}`` line in ``error.log`` per
        failed or timed-out run, tagged with the task and its id."""
        self.errors.append(
            f"Log Error: {report.error_type}: {mask(report.error)} "
            f"(task={report.task} id={report.task_id} outcome={report.outcome})"
        )

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Close the channels' connections."""
        for channel in (self.email, self.sms):
            if channel is not None:
                channel.close()

    def _deliver(self, channel: str, send: Callable[[str], None]) -> bool:
        """Send once per task id: False (nothing sent) if an earlier run of the task delivered
        its message already."""
        task_id = delivery.current_task_id()
        if task_id is not None and self.ledger.delivered(task_id):
            delivery.skipped(channel)
            return False
        send(task_id or "")
        if task_id is not None:
            try:
                self.ledger.record(task_id)
            except Exception as exc:  # delivered all the same: a redelivery could repeat it
                self.log_events.warning(
                    names.EVENT_DELIVERY_LEDGER_FAILED,
                    task_id=task_id,
                    error_type=type(exc).__name__,
                )
        return True

    @staticmethod
    def _append(file: LineFile, record: str) -> None:
        """The file channel: the line is the delivery."""
        with delivery.attempt(FILE_CHANNEL):
            file.append(record)


def _smtp(settings: Settings) -> SmtpChannel:
    return SmtpChannel(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        sender=settings.smtp_from,
        timeout=settings.delivery_timeout_seconds,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value(),
        ca_file=settings.smtp_ca_file,
    )


def _sms(settings: Settings) -> HttpSmsChannel:
    return HttpSmsChannel(
        settings.sms_http_url,
        token=settings.sms_http_token.get_secret_value(),
        timeout=settings.delivery_timeout_seconds,
        pool_size=settings.task_concurrency,
    )
