"""Settings, read from ``NOTIFY_*`` environment variables by ``create_app()``."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    data_dir: Path = Path("./data")
    task_backend: Literal["inprocess", "celery"] = "inprocess"
    broker_url: str = "redis://localhost:6379/0"
    task_timeout_seconds: float = Field(30.0, gt=0)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = (
        "INFO"
    )
    access_log: bool = False
    log_task_lifecycle: bool = False
    task_concurrency: int = Field(8, ge=1)
    task_backlog: int = Field(10000, ge=1)
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    worker_metrics_port: int = Field(9101, ge=0, le=65535)
    worker_pool: Literal["prefork", "threads"] = "prefork"
    celery_trace_mode: Literal["child", "link"] = "child"
    broker_visibility_timeout_seconds: float = Field(3600.0, gt=0)
    task_max_retries: int = Field(0, ge=0)
    task_retry_backoff_seconds: float = Field(1.0, ge=0)
    task_history_size: int = Field(10000, ge=1)
    max_text_length: int = Field(1000, ge=1)
    service_name: str = "notification-service"
    max_url_bytes: int = Field(8192, ge=256)
    max_header_bytes: int = Field(8192, ge=256)
    max_body_bytes: int = Field(65536, ge=0)
    metrics_token: SecretStr = SecretStr("")
    metrics_port: int = Field(0, ge=0, le=65535)
    log_masking: bool = True
    span_export_process: bool = True
