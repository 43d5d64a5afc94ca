"""A FastAPI app that is not the notification service: ``POST /ping?url=...`` calls a URL in
the background, and the ``observability`` package makes each call a measured, traced, logged
task. Run it: ``uvicorn --factory examples.url_pinger:create_app``."""

import urllib.request

from fastapi import FastAPI

from observability import NATIVE_TELEMETRY_OFF, ObservabilitySettings, Tasks, instrument


def ping(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()


def create_app() -> FastAPI:
    app = FastAPI(telemetry=NATIVE_TELEMETRY_OFF)
    instrument(app, ObservabilitySettings(service_name="url-pinger"), tasks={"ping": ping})

    @app.post("/ping")
    async def add_ping(url: str, tasks: Tasks) -> dict[str, list[str]]:
        tasks.add_task(ping, url)
        return {"task_ids": tasks.task_ids}

    return app
