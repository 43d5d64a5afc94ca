"""The names that dashboards, alert rules, tests and users rely on, defined once."""

from typing import Final

# Metrics
HTTP_REQUEST_DURATION: Final = "http_server_request_duration_seconds"
HTTP_ACTIVE_REQUESTS: Final = "http_server_active_requests"
TASK_ENQUEUED: Final = "background_task_enqueued_total"
TASK_STARTED: Final = "background_task_started_total"
TASK_FINISHED: Final = "background_task_finished_total"
TASK_FAILURES: Final = "background_task_failures_total"
TASK_DROPPED: Final = "background_task_dropped_total"
TASK_REDELIVERED: Final = "background_task_redelivered_total"
TASK_REFUSED: Final = "background_task_refused_total"
TASK_QUEUE_WAIT: Final = "background_task_queue_wait_seconds"
TASK_DURATION: Final = "background_task_duration_seconds"
TASK_IN_PROGRESS: Final = "background_task_in_progress"
TASK_QUEUE_DEPTH: Final = "background_task_queue_depth"
TASK_OLDEST_PENDING: Final = "background_task_oldest_pending_timestamp_seconds"
TASK_CAPACITY: Final = "background_task_capacity"
TASK_LAST_STARTED: Final = "background_task_last_started_timestamp_seconds"
TASK_LAST_FINISHED: Final = "background_task_last_finished_timestamp_seconds"
EVENT_LOOP_LAG: Final = "event_loop_lag_seconds"
SPANS_EXPORTED: Final = "tracing_spans_exported_total"
SPANS_DROPPED: Final = "tracing_spans_dropped_total"
SPANS_QUEUED: Final = "tracing_spans_queued"
DELIVERY_ATTEMPTS: Final = "notification_delivery_attempts_total"
DELIVERY_DURATION: Final = "notification_delivery_duration_seconds"
DELIVERY_ERRORS: Final = "notification_delivery_errors_total"
DELIVERY_SKIPPED: Final = "notification_delivery_skipped_total"

# Label values
OUTCOME_SUCCESS: Final = "success"
OUTCOME_FAILURE: Final = "failure"
OUTCOME_TIMEOUT: Final = "timeout"
OUTCOME_RETRY: Final = "retry"
OUTCOMES: Final = (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_TIMEOUT)
REASON_BACKLOG_FULL: Final = "backlog_full"
REASON_SHUTDOWN: Final = "shutdown"
REASON_ENQUEUE_ERROR: Final = "enqueue_error"
DROP_REASONS: Final = (REASON_BACKLOG_FULL, REASON_SHUTDOWN, REASON_ENQUEUE_ERROR)
SPAN_DROP_QUEUE_FULL: Final = "queue_full"
SPAN_DROP_SHUTDOWN: Final = "shutdown"
SPAN_DROP_REASONS: Final = (SPAN_DROP_QUEUE_FULL, SPAN_DROP_SHUTDOWN)
RESULT_DELIVERED: Final = "delivered"
RESULT_TRANSIENT: Final = "transient_error"
RESULT_PERMANENT: Final = "permanent_error"
DELIVERY_RESULTS: Final = (RESULT_DELIVERED, RESULT_TRANSIENT, RESULT_PERMANENT)

# Spans
TASK_SPAN_PREFIX: Final = "background_task"
ATTR_TASK_NAME: Final = "background_task.name"
ATTR_TASK_ID: Final = "background_task.id"
ATTR_TASK_BACKEND: Final = "background_task.backend"
ATTR_TASK_OUTCOME: Final = "background_task.outcome"
ATTR_TASK_QUEUE_WAIT: Final = "background_task.queue_wait_seconds"
PUBLISH_SPAN_PREFIX: Final = "publish"  # the API's PRODUCER span: "publish {queue}"
PROCESS_SPAN_PREFIX: Final = "process"  # a Celery worker's CONSUMER run span: "process {queue}"
MESSAGING_SYSTEM_CELERY: Final = "celery"
ATTR_MESSAGING_SYSTEM: Final = "messaging.system"
ATTR_MESSAGING_DESTINATION: Final = "messaging.destination.name"
ATTR_MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"  # the span name's first word
ATTR_MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"  # "send" or "process"
ATTR_MESSAGING_MESSAGE_ID: Final = "messaging.message.id"  # the task id
ATTR_DELIVERY_CHANNEL: Final = "notification.channel"
ATTR_DELIVERY_ATTEMPT: Final = "notification.attempt"

# Log events
EVENT_ENQUEUED: Final = "task.enqueued"
EVENT_STARTED: Final = "task.started"
EVENT_SUCCEEDED: Final = "task.succeeded"
EVENT_FAILED: Final = "task.failed"
EVENT_TIMED_OUT: Final = "task.timed_out"
EVENT_DROPPED: Final = "task.dropped"
EVENT_OVERRAN: Final = "task.overran"
EVENT_REDELIVERED: Final = "task.redelivered"
EVENT_FAILURE_SINK_ERROR: Final = "task.failure_sink_error"
EVENT_LOOP_STALLED: Final = "event_loop.stalled"
EVENT_SPANS_DROPPED: Final = "tracing.spans_dropped"
EVENT_EXPORT_PROCESS_EXITED: Final = "tracing.export_process_exited"
EVENT_EXPORT_BATCH_FAILED: Final = "tracing.export_batch_failed"
EVENT_PROTOCOL_UNSUPPORTED: Final = "tracing.protocol_unsupported"
EVENT_SERVICE_STARTED: Final = "service.started"
EVENT_SERVICE_STOPPED: Final = "service.stopped"
EVENT_WORKER_STARTED: Final = "worker.started"
EVENT_WORKER_BANNER: Final = "worker.banner"  # Celery's start-up banner, in JSON log mode
EVENT_WORKER_SHUTTING_DOWN: Final = "worker.shutting_down"  # Celery's "Warm shutdown" notice
EVENT_HTTP_REQUEST: Final = "http.request"  # the access line (NOTIFY_ACCESS_LOG)
EVENT_SHUTDOWN_DRAINING: Final = "shutdown.draining"
EVENT_SHUTDOWN_DRAINED: Final = "shutdown.drained"
EVENT_SHUTDOWN_FORCED: Final = "shutdown.forced"
EVENT_DRAIN_TIMEOUT: Final = "backend.drain_timeout"
EVENT_PUBLISH_FAILED: Final = "broker.publish_failed"
EVENT_BROKER_UNREACHABLE: Final = "broker.unreachable"
EVENT_LOOKUP_FAILED: Final = "broker.lookup_failed"
EVENT_DELIVERY_SKIPPED: Final = "delivery.skipped"
EVENT_DELIVERY_LEDGER_FAILED: Final = "delivery.ledger_failed"
EVENT_IDEMPOTENCY_STORE_UNAVAILABLE: Final = "idempotency.store_unavailable"
EVENT_IDEMPOTENCY_STORE_FAILED: Final = "idempotency.store_failed"
EVENT_IDEMPOTENCY_NOT_KEPT: Final = "idempotency.response_not_kept"

OUTCOME_EVENTS: Final = {
    OUTCOME_SUCCESS: EVENT_SUCCEEDED,
    OUTCOME_FAILURE: EVENT_FAILED,
    OUTCOME_TIMEOUT: EVENT_TIMED_OUT,
    OUTCOME_RETRY: EVENT_FAILED,
}
