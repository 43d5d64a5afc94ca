"""The Celery app's configuration, shared by the API (which publishes) and the workers."""

from celery import Celery

from observability.settings import ObservabilitySettings

CELERY_QUEUE = "celery"
RELIABLE_REDIS = "observability.backends.reliable_redis:Transport"
HARD_LIMIT_GRACE_SECONDS = 5.0  # from the soft time limit (reported timeout) to SIGKILL


def create_celery_app(settings: ObservabilitySettings, main: str | None = None) -> Celery:
    """The Celery app: late acknowledgement, Celery time limits from the task timeout."""
    app = Celery(main or settings.service_name.replace("-", "_"), broker=settings.broker_url)
    app.conf.update(
        # no window for losing a message when a worker dies (see reliable_redis)
        broker_transport=RELIABLE_REDIS if settings.broker_url.startswith("redis") else None,
        task_default_queue=CELERY_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # At the soft limit the run ends as `timeout`; a body that survives it is killed at the
        # hard limit (prefork only: the threads pool ignores both, the runner reports instead).
        task_soft_time_limit=settings.task_timeout_seconds,
        task_time_limit=settings.task_timeout_seconds + HARD_LIMIT_GRACE_SECONDS,
        result_backend=settings.broker_url,
        result_expires=24 * 3600,
        redis_socket_connect_timeout=2,
        redis_socket_timeout=5,
        result_backend_transport_options={"retry_policy": {"max_retries": 1}},
        task_track_started=True,
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.task_concurrency,
        worker_prefetch_multiplier=1,
        # A redelivered message whose run already succeeded (the worker died after storing the
        # result, before acknowledging) is not run again.
        worker_deduplicate_successful_tasks=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Celery's task events (Flower, celery-exporter): the workers' (``-E``) and the
        # publisher's ``task-sent``, so queued tasks show too. Flower turns the workers' on
        # remotely whatever this says; what they carry is masked (celery_message).
        worker_send_task_events=settings.celery_task_events,
        task_send_sent_event=settings.celery_task_events,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_transport_options={
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            # Redis: a message a worker took but never acknowledged (the whole worker died) is
            # delivered again after this long; keep it above the longest run (hard limit).
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            # ...by the next sweep of a live worker: at its start, then every 10 s (kombu's
            # default throttle would make that every 100 s).
            "unacked_restore_throttle": 1,
        },
    )
    return app
