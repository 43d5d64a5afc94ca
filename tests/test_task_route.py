"""``TaskRoute`` and ``TaskMiddleware`` on a tiny inline app with an in-process backend: the
request's tasks run once the response has been sent, and a full backlog answers 503."""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.backends.inprocess import InProcessBackend
from observability.tasks.batch import Tasks
from observability.tasks.route import RETRY_AFTER_SECONDS, TaskMiddleware, TaskRoute
from tests.support.polling import wait_until
from tests.support.recorder import Harness


class ResponseLog:
    """Outermost ASGI wrapper: appends "response sent" to ``events`` once a response's last
    body message has gone out."""

    def __init__(self, app: ASGIApp, events: list[str], lock: threading.Lock) -> None:
        self.app, self.events, self.lock = app, events, lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def logging_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                with self.lock:
                    self.events.append("response sent")

        await self.app(scope, receive, logging_send)


class TaskApp:
    """``POST /notify/{n}`` adds ``n`` tasks; ``POST /block`` adds one that waits for
    ``unblock``. Every task run appends ``"ran <i>"`` to ``events``."""

    def __init__(self, concurrency: int = 2, backlog: int = 10) -> None:
        self.harness = Harness()
        self.backend = InProcessBackend(
            self.harness.recorder, concurrency=concurrency, backlog=backlog, timeout=5.0
        )
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.unblock = threading.Event()
        self.task_ids: list[list[str]] = []  # by request, as the endpoints added them
        app = FastAPI()
        app.router.route_class = TaskRoute

        def note(i: int) -> None:
            with self.lock:
                self.events.append(f"ran {i}")

        def wait_for_unblock() -> None:
            assert self.unblock.wait(30)

        @app.post("/notify/{n}")
        async def notify(n: int, tasks: Tasks) -> dict[str, list[str]]:
            ids = [tasks.add_task(note, i) for i in range(n)]
            self.task_ids.append(ids)
            return {"task_ids": ids}

        @app.post("/block")
        async def block(tasks: Tasks) -> dict[str, list[str]]:
            ids = [tasks.add_task(wait_for_unblock)]
            self.task_ids.append(ids)
            return {"task_ids": ids}

        app.add_middleware(TaskMiddleware, backend=self.backend)
        self.app = ResponseLog(app, self.events, self.lock)

    def value(self, name: str, **labels: str) -> float:
        return self.harness.value(name, **labels)

    def run(self, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
        """Start the backend, run ``body`` with a client of the app, drain the backend."""

        async def main() -> Any:
            await self.backend.start()
            try:
                transport = httpx.ASGITransport(app=self.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    return await body(client)
            finally:
                self.unblock.set()
                await self.backend.drain(5.0)

        return asyncio.run(main())

    async def wait(self, predicate: Callable[[], Any], what: str) -> None:
        """Poll ``predicate`` under a deadline off the event loop (the backend needs the loop)."""
        await asyncio.to_thread(wait_until, predicate, 10.0, what=what, interval=0.01)


def test_tasks_run_after_the_response_is_sent() -> None:
    """A route adding two tasks answers 200, and both tasks run after the response was sent."""
    app = TaskApp()

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        response = await client.post("/notify/2")
        await app.wait(
            lambda: (
                app.value("background_task_finished_total", task="note", outcome="success") == 2
            ),
            "both tasks to finish",
        )
        return response

    response = app.run(body)
    assert response.status_code == 200
    assert response.json() == {"task_ids": app.task_ids[0]}
    assert app.events[0] == "response sent"
    assert sorted(app.events[1:]) == ["ran 0", "ran 1"]
    assert app.value("background_task_enqueued_total", task="note") == 2
    for task_id in app.task_ids[0]:
        record = app.harness.journal.get(task_id)
        assert record is not None and record.state == "succeeded"


def test_full_backlog_answers_503_with_the_refused_ids() -> None:
    """With the backlog full, a request's tasks are refused: 503, Retry-After, reason
    backlog_full, the refused ids, each counted as dropped and refused."""
    app = TaskApp(concurrency=1, backlog=1)

    async def body(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await client.post("/block")).status_code == 200
        await app.wait(
            lambda: app.value("background_task_in_progress", task="wait_for_unblock") == 1,
            "the blocking task to run",
        )  # it has left the backlog: one place is free
        queued = await client.post("/notify/1")
        refused = await client.post("/notify/2")
        app.unblock.set()
        await app.wait(
            lambda: (
                app.value("background_task_finished_total", task="note", outcome="success") == 1
            ),
            "the queued task to run",
        )
        return queued, refused

    queued, refused = app.run(body)
    assert queued.status_code == 200
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    answer = refused.json()
    assert answer["reason"] == "backlog_full"
    assert answer["task_ids"] == app.task_ids[2] and len(answer["task_ids"]) == 2
    assert answer["accepted_task_ids"] == []
    labels = {"task": "note", "reason": "backlog_full"}
    assert app.value("background_task_dropped_total", **labels) == 2
    assert app.value("background_task_refused_total", **labels) == 2
    assert app.value("background_task_enqueued_total", task="note") == 1
    assert app.events.count("ran 0") == 1  # only the queued request's task ran
    for task_id in answer["task_ids"]:
        record = app.harness.journal.get(task_id)
        assert record is not None and record.state == "dropped"
