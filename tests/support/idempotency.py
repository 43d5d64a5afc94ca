"""Helpers of the JSON API and ``Idempotency-Key`` tests: the service app run in this process
(its lifespan, an httpx client over ``ASGITransport``, task polling under a deadline), and a tiny
inline app behind ``IdempotencyMiddleware`` whose endpoint counts its runs and can be held."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.idempotency import IdempotencyMiddleware, IdempotencyStore
from service.settings import Settings
from tests.support.polling import wait_until

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "timed_out", "dropped"}


class Session:
    """A client of a running app, and the loop it runs on."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    async def post(self, url: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.client.post(url, headers=headers, **kwargs)

    async def task_finished(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """``GET /tasks/{id}`` polled (from a thread, the loop goes on) until the task ended."""

        def finished() -> dict[str, Any] | None:
            future = asyncio.run_coroutine_threadsafe(
                self.client.get(f"/tasks/{task_id}"), self.loop
            )
            answer: dict[str, Any] = future.result(timeout).json()
            return answer if answer.get("state") in TERMINAL else None

        return await asyncio.to_thread(
            wait_until, finished, timeout, what=f"task {task_id} to finish"
        )

    async def until(self, predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
        """Poll a thread-safe ``predicate`` under a deadline, off the loop."""
        await asyncio.to_thread(wait_until, predicate, timeout, what=what, interval=0.01)


class ServiceApp:
    """``create_app(settings)`` with a registry of its own, run in this process."""

    def __init__(self, settings: Settings, store: IdempotencyStore | None = None) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.app = create_app(
            settings,
            registry=self.registry,
            tracer_provider=TracerProvider(),
            idempotency_store=store,
        )

    def run(self, body: Callable[[Session], Awaitable[T]]) -> T:
        """Run the lifespan (task backend, sinks) around ``body`` with a client of the app."""

        async def main() -> T:
            async with self.app.router.lifespan_context(self.app):
                transport = httpx.ASGITransport(app=self.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    return await body(Session(client, asyncio.get_running_loop()))

        return asyncio.run(main())

    def value(self, name: str, **labels: str) -> float:
        labels = {"backend": self.settings.task_backend, **labels}
        return self.registry.get_sample_value(name, labels) or 0.0

    def enqueued(self, task: str) -> float:
        return self.value("background_task_enqueued_total", task=task)


class KeyedApp:
    """``POST /work`` counts its runs and answers 201 ``{"run": n, "length": ...}`` with a
    ``Location`` (``?hold=true``: sets ``entered`` and waits for ``release`` first);
    ``POST /unavailable`` answers 503 on its first run, 200 after; ``POST /crash`` raises on its
    first run; ``POST /large`` answers ``size`` bytes. Behind ``IdempotencyMiddleware`` over
    ``store``."""

    def __init__(
        self, store: IdempotencyStore, *, max_body_bytes: int = 1024, **options: Any
    ) -> None:
        self.runs = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        app = FastAPI()

        @app.post("/work")
        async def work(request: Request, hold: bool = False) -> JSONResponse:
            self.runs += 1
            run = self.runs
            body = await request.body()
            if hold:
                self.entered.set()
                await self.release.wait()
            return JSONResponse(
                {"run": run, "length": len(body)},
                status_code=201,
                headers={"Location": f"/runs/{run}", "X-Not-Replayed": "1"},
            )

        @app.post("/unavailable")
        async def unavailable() -> JSONResponse:
            self.runs += 1
            if self.runs == 1:
                return JSONResponse({"detail": "busy"}, 503, headers={"Retry-After": "5"})
            return JSONResponse({"run": self.runs})

        @app.post("/crash")
        async def crash() -> dict[str, int]:
            self.runs += 1
            if self.runs == 1:
                raise RuntimeError("the first run fails")
            return {"run": self.runs}

        @app.post("/large")
        async def large(size: int) -> JSONResponse:
            self.runs += 1
            return JSONResponse({"run": self.runs, "padding": "x" * size})

        app.add_middleware(
            IdempotencyMiddleware,
            store=store,
            ttl_seconds=options.pop("ttl_seconds", 60),
            max_body_bytes=max_body_bytes,
            **options,
        )
        self.app = app

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://test")
