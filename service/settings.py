"""Settings, read from ``NOTIFY_*`` environment variables by ``create_app()``: the
instrumentation's (``ObservabilitySettings``) and the service's own."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from observability.settings import ObservabilitySettings


class Settings(ObservabilitySettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    service_name: str = "notification-service"
    data_dir: Path = Path("./data")
    max_text_length: int = Field(1000, ge=1)
    max_url_bytes: int = Field(8192, ge=256)
    max_header_bytes: int = Field(8192, ge=256)
    max_body_bytes: int = Field(65536, ge=0)
    # delivery channels
    email_channel: Literal["file", "smtp"] = "file"
    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "notifications@localhost"
    smtp_ca_file: Path | None = None
    sms_channel: Literal["file", "http"] = "file"
    sms_http_url: str = ""
    sms_http_token: SecretStr = SecretStr("")
    delivery_timeout_seconds: float = Field(10.0, gt=0)
    idempotency_ttl_seconds: int = Field(86400, ge=1)

    @model_validator(mode="after")
    def _sms_provider_named(self) -> "Settings":
        if self.sms_channel == "http" and not self.sms_http_url:
            raise ValueError("NOTIFY_SMS_CHANNEL=http needs NOTIFY_SMS_HTTP_URL")
        return self

    def delivery_channels(self) -> tuple[str, ...]:
        """The channels e-mail and SMS go through (the file lines are always written)."""
        return tuple(dict.fromkeys(("file", self.email_channel, self.sms_channel)))
