"""Baseline for the benchmark: the background-tasks tutorial app, uninstrumented.

Same four endpoints, task functions and file formats as the tutorial
(``seed/000_55663788f87899f9.txt``). The one change: the files are written into the
folder named by ``NOTIFY_DATA_DIR`` (default: the current directory, as in the tutorial),
so benchmark runs do not litter the repository.

Run: ``NOTIFY_DATA_DIR=/tmp/x uvicorn bench.tutorial_app:app`` (from the repository root).

With ``NOTIFY_BENCH_INSTRUMENTED=1`` the app also gets the usual FastAPI observability stack,
which sees HTTP requests but not background tasks (the ``tutorial-instrumented`` baseline):

* ``prometheus_fastapi_instrumentator.Instrumentator().instrument(app).expose(app)``
  (default settings: HTTP request metrics, ``GET /metrics``);
* ``FastAPIInstrumentor.instrument_app(app, tracer_provider=...)`` with an OpenTelemetry SDK
  ``TracerProvider`` that has no span processor: request spans are created, sampled and ended,
  then dropped (no exporter, so no export cost).

No access log is added (uvicorn's is off under ``--log-level warning``, as for the plain app).
Without the variable nothing of this is imported and the app is the tutorial's.
"""

import os
from pathlib import Path
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI

DATA_DIR = Path(os.environ.get("NOTIFY_DATA_DIR", "."))
DATA_DIR.mkdir(parents=True, exist_ok=True)
LOG_FILE = DATA_DIR / "log.txt"
SMS_LOG_FILE = DATA_DIR / "sms_log.txt"
ERROR_LOG_FILE = DATA_DIR / "error.log"

app = FastAPI()


def write_log(message: str) -> None:
    with open(LOG_FILE, mode="a") as log:
        log.write(message)


@app.post("/send-notification/{email}")
async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Notification sent in background"}


def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
    if q:
        message = f"Query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/advanced-notification/{email}")
async def advanced_notification(
    email: str,
    background_tasks: BackgroundTasks,
    query: Annotated[str, Depends(get_query)],
) -> dict[str, str]:
    background_tasks.add_task(write_log, f"Email: {email}\n")
    return {"status": "multi-task executed"}


class NotificationService:
    @staticmethod
    def sms_task(phone: str, msg: str) -> None:
        # stands in for sending the text message
        with open(SMS_LOG_FILE, "a") as f:
            f.write(f"{phone}:{msg}\n")


@app.post("/send-sms")
async def send_sms(phone: str, msg: str, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(NotificationService.sms_task, phone, msg)
    return {"result": "短信任务已排队"}


def safe_write_log(message: str) -> None:
    try:
        with open(LOG_FILE, "a") as f:
            f.write(message)
    except Exception as e:
        with open(ERROR_LOG_FILE, "a") as f:
            f.write(f"Log Error: {e!s}\n")


@app.post("/safe-notify")
async def safe_notify(tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(safe_write_log, "安全日志条目\n")
    return {"status": "error-handled"}


if os.environ.get("NOTIFY_BENCH_INSTRUMENTED") == "1":
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator().instrument(app).expose(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=TracerProvider())
