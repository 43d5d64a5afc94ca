"""A test-only app factory: the real service plus deliberately bad tasks, added through the
public API (``Tasks``, ``TaskRoute``), for the fault tests. Never part of the product."""

import asyncio
import time
from typing import Any

from fastapi import APIRouter, FastAPI

from observability import TaskRoute, Tasks
from service.main import create_app as create_service


async def raising_task(message: str) -> None:
    """Fails at once."""
    raise ValueError(message)


async def hanging_task(seconds: float) -> None:
    """Awaits far longer than any timeout (cancellable)."""
    await asyncio.sleep(seconds)


async def loop_blocking_task(seconds: float) -> None:
    """The classic mistake: a blocking call inside a coroutine stalls the whole event loop."""
    time.sleep(seconds)


def create_app() -> FastAPI:
    """The service with ``POST /faults/{raise,hang,block-loop}`` adding those tasks."""
    app = create_service()
    router = APIRouter(prefix="/faults", route_class=TaskRoute)

    @router.post("/raise")
    async def add_raising(tasks: Tasks) -> dict[str, Any]:
        tasks.add_task(raising_task, "deliberate failure")
        return {"task_ids": tasks.task_ids}

    @router.post("/hang")
    async def add_hanging(tasks: Tasks, seconds: float = 3600.0) -> dict[str, Any]:
        tasks.add_task(hanging_task, seconds)
        return {"task_ids": tasks.task_ids}

    @router.post("/block-loop")
    async def add_blocking(tasks: Tasks, seconds: float = 1.5) -> dict[str, Any]:
        tasks.add_task(loop_blocking_task, seconds)
        return {"task_ids": tasks.task_ids}

    app.include_router(router)
    return app
