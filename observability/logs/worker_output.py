"""A Celery worker's own output as log events. Celery prints its start-up banner to stdout and
writes its shutdown notice (``worker: Warm shutdown (MainProcess)``) straight to file
descriptor 1, neither through ``logging``, and Python warnings (Celery's ``SecurityWarning``
when run as root) go to stderr before the worker sets up logging: in JSON log mode each would
break a line-per-object log pipeline. So, in JSON mode, the banner is silenced and logged as
one ``worker.banner`` event (node name, broker URL without its password, queues, concurrency,
pool, tasks), and the warm or cold shutdown notice as a ``worker.shutting_down`` event; warnings
are logged from the worker's first signal on (in both modes). Console mode keeps Celery's own
banner and notices, for humans."""

import threading
from collections.abc import Callable
from typing import Any

import celery
from celery import Celery, bootsteps, signals
from celery.apps import worker as celery_worker

from observability import names
from observability.logs.configuration import LogFormat, get_logger


def connect_worker_output(
    app: Celery, log_format: LogFormat, configure_logging: Callable[[], None]
) -> None:
    """Connect ``app``'s worker signals: ``configure_logging`` as the worker starts (before
    Celery's first warning), and in JSON mode the banner and shutdown notices as events."""
    json_mode = log_format == "json"

    def celeryd_init(instance: Any = None, **_: Any) -> None:
        configure_logging()
        if json_mode and isinstance(instance, celery_worker.Worker):
            instance.quiet = True  # no banner on stdout: ``celeryd_after_setup`` logs it

    def celeryd_after_setup(instance: Any = None, **_: Any) -> None:
        if json_mode and isinstance(instance, celery_worker.Worker):
            get_logger("observability.worker").info(names.EVENT_WORKER_BANNER, **banner(instance))

    signals.celeryd_init.connect(celeryd_init, weak=False)
    if json_mode:
        signals.celeryd_after_setup.connect(celeryd_after_setup, weak=False)
        signals.worker_shutting_down.connect(_shutting_down, weak=False)
        app.steps["worker"].add(QuietShutdownNotices)


def banner(worker: Any) -> dict[str, Any]:
    """What Celery's banner says, as fields (``broker``/``results`` without passwords: kombu's
    ``as_uri`` shows ``**``; the log processors mask the rest like any other field)."""
    app = worker.app
    pool = worker.pool_cls if isinstance(worker.pool_cls, str) else worker.pool_cls.__module__
    return {
        "node": worker.hostname,
        "celery_version": celery.__version__,
        "broker": app.connection().as_uri(),
        "results": app.backend.as_uri(),
        "concurrency": worker.concurrency,
        "pool": pool.rsplit(".", 1)[-1],
        "queues": sorted(app.amqp.queues.consume_from),
        "tasks": sorted(name for name in app.tasks if not name.startswith("celery.")),
        "task_events": bool(worker.task_events),
    }


def _shutting_down(sig: str = "", how: str = "", exitcode: int | None = None, **_: Any) -> None:
    """Runs in the worker's signal handler, which may have interrupted a write to stdout: the
    event is logged from a thread of its own, which waits for that write to end (logging here
    could re-enter the stream's buffer, which Python refuses)."""
    fields = {"signal": sig, "shutdown": how.lower(), "exitcode": exitcode}
    logger = get_logger("observability.worker")
    threading.Thread(
        target=logger.info,
        args=(names.EVENT_WORKER_SHUTTING_DOWN,),
        kwargs=fields,
        name="worker-shutdown-notice",
    ).start()


class QuietShutdownNotices(bootsteps.StartStopStep):  # type: ignore[misc]  # celery: untyped
    """Re-installs the worker program's SIGTERM and SIGQUIT handlers (installed, with their
    notices, just before the worker's steps start) without writing the notice to stdout:
    ``worker_shutting_down`` logs it instead."""

    label = "quiet shutdown notices"

    def start(self, parent: Any) -> None:
        if isinstance(parent, celery_worker.Worker):
            celery_worker.install_worker_term_handler(parent, verbose=False)
            celery_worker.install_worker_term_hard_handler(parent, verbose=False)
