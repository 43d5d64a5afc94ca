"""A bare Celery worker for the benchmark: the tutorial's ``write_log`` as a Celery task.

Run: ``celery -A bench.celery_bare worker`` with ``BENCH_BROKER_URL`` and ``NOTIFY_DATA_DIR``;
``BENCH_CELERY_CONF`` (JSON) may add Celery settings (the harness passes the project's own to
tell what its Celery configuration costs from what its instrumentation costs)."""

import json
import os

from celery import Celery

LOG_FILE = os.path.join(os.environ.get("NOTIFY_DATA_DIR", "."), "log.txt")

app = Celery("bench_bare", broker=os.environ.get("BENCH_BROKER_URL", "redis://localhost:6379/0"))
app.conf.broker_connection_retry_on_startup = True
app.conf.update(json.loads(os.environ.get("BENCH_CELERY_CONF", "{}")))


@app.task(name="bench.write_log")  # type: ignore[untyped-decorator]
def write_log(message: str) -> None:
    with open(LOG_FILE, mode="a") as log:
        log.write(message)
