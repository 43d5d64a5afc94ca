"""Settings, read from ``NOTIFY_*`` environment variables by ``create_app()``: the
instrumentation's (``ObservabilitySettings``) and the service's own."""

from pathlib import Path

from pydantic import Field
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
