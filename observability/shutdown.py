"""SIGTERM handling: keep serving while the backlog drains, then let the server stop."""

import asyncio
import os
import signal
import threading
from types import FrameType
from typing import Any

from observability import names
from observability.logs.configuration import get_logger
from observability.tasks.backend import Backend


class GracefulShutdown:
    """On the first SIGTERM the backend stops accepting (``/readyz`` answers 503, task-adding
    requests get 503) and drains for up to ``grace`` seconds while HTTP is still served; then
    the signal goes on to the server (uvicorn), whose own shutdown follows. A second SIGTERM
    stops waiting: the server shuts down at once and the drain gets no more time."""

    def __init__(self, backend: Backend, grace: float) -> None:
        self.backend = backend
        self.grace = grace
        self.forced = False
        self._previous: Any = None
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log = get_logger("observability.shutdown")

    def install(self) -> None:
        """Take over SIGTERM (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        if self._loop is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._loop = None

    def remaining_grace(self) -> float:
        """What is left for the final drain: nothing once a second SIGTERM came."""
        return 0.0 if self.forced else self.grace

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.backend.stop_accepting()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_signal, signum, frame)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop(signum))
            return
        self.forced = True
        self.log.warning(names.EVENT_SHUTDOWN_FORCED)
        self._pass_on(signum, frame)

    async def _drain_then_stop(self, signum: int) -> None:
        self.log.info(names.EVENT_SHUTDOWN_DRAINING, grace_seconds=self.grace)
        await self.backend.drain(self.grace)
        self.log.info(names.EVENT_SHUTDOWN_DRAINED)
        if not self.forced:
            self._pass_on(signum, None)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        else:  # no server handler: default behaviour
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
