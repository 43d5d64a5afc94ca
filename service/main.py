"""The entry point: ``uvicorn --factory service.main:create_app``.

Under ``uvicorn --workers N`` every server process is spawned by uvicorn's supervisor, which
runs none of our code: the first of them to import this module names the metrics directory of
that supervisor's lifetime, before prometheus-client is imported (it picks its mode then), so
that every scrape, whichever process answers it, returns the totals of all."""

from observability.metrics import directory

directory.claim_for_siblings("notify-api-metrics")

from service.app import create_app  # noqa: E402

__all__ = ["create_app"]
