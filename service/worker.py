"""The Celery worker: ``celery -A service.worker worker``.

The default pool is prefork (``NOTIFY_WORKER_POOL``): ``NOTIFY_TASK_CONCURRENCY`` child
processes, so Celery's time limits work and CPU-bound tasks use several cores. Every process
writes its metrics to a directory private to this worker start and the main process serves them
all, merged, on ``NOTIFY_WORKER_METRICS_PORT``."""

from observability.backends.celery_app import create_celery_app
from observability.worker import instrument_worker  # first: it claims the metrics directory
from service.notifications import NotificationService
from service.settings import Settings

settings = Settings()
notifications = NotificationService(settings)
app = create_celery_app(settings)
worker = instrument_worker(
    app,
    settings,
    notifications.tasks(),
    failure_sink=notifications.report_failure,
    prepare=notifications.ensure_data_dir,
    delivery_channels=settings.delivery_channels(),
)
