"""Settings of the instrumentation, from environment variables (pydantic-settings). An
application subclasses them with its own fields and prefix (the service: ``NOTIFY_``)."""

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from observability.tasks.retry import RetryPolicy

# Keys every log line has already: the message can't be copied under one of them.
BASE_LOG_KEYS = frozenset({"event", "level", "timestamp", "logger", "trace_id", "span_id"})
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"]


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OBSERVABILITY_", extra="ignore")

    service_name: str = "fastapi-service"
    task_backend: Literal["inprocess", "celery"] = "inprocess"
    broker_url: str = "redis://localhost:6379/0"
    task_timeout_seconds: float = Field(30.0, gt=0)
    task_concurrency: int = Field(8, ge=1)
    task_backlog: int = Field(10000, ge=1)
    task_history_size: int = Field(10000, ge=1)
    task_max_retries: int = Field(3, ge=0)
    task_retry_backoff_seconds: float = Field(1.0, ge=0)
    task_retry_max_backoff_seconds: float = Field(60.0, ge=0)
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    log_format: Literal["json", "console"] = "json"
    log_level: LogLevel = "INFO"
    log_masking: bool = True
    log_message_key: str = Field("message", pattern=r"^([A-Za-z_@][A-Za-z0-9_.@-]*)?$")
    log_task_lifecycle: bool = False
    access_log: bool = False
    metrics_token: SecretStr = SecretStr("")
    metrics_port: int = Field(0, ge=0, le=65535)
    span_export_process: bool = True
    gc_freeze: bool = True
    worker_metrics_port: int = Field(9101, ge=0, le=65535)
    worker_pool: Literal["prefork", "threads"] = "prefork"
    celery_trace_mode: Literal["child", "link"] = "child"
    celery_task_events: bool = False
    broker_visibility_timeout_seconds: float = Field(3600.0, gt=0)

    @field_validator("log_message_key")
    @classmethod
    def _message_key_is_free(cls, key: str) -> str:
        if key in BASE_LOG_KEYS:
            raise ValueError(f"{key!r} is a key of every log line already")
        return key


def retry_policy(settings: ObservabilitySettings) -> RetryPolicy:
    """The retry policy of both backends."""
    return RetryPolicy(
        max_retries=settings.task_max_retries,
        backoff=settings.task_retry_backoff_seconds,
        max_backoff=settings.task_retry_max_backoff_seconds,
    )
