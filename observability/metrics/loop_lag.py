"""Event-loop lag: a periodic timer on the loop measures how late it wakes up. A task that
blocks the loop (an ``async`` function calling ``time.sleep``) shows up as lag, in the
``event_loop_lag_seconds`` histogram and as an ``event_loop.stalled`` warning."""

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

from observability import names
from observability.logs.configuration import get_logger

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LoopLagMonitor:
    """Wakes every ``interval`` seconds and records how much later than asked it woke; a lag
    of ``stall_threshold`` seconds or more is also logged."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval: float = 0.25,
        stall_threshold: float = 0.5,
    ) -> None:
        self.interval = interval
        self.stall_threshold = stall_threshold
        self.lag = Histogram(
            names.EVENT_LOOP_LAG,
            "Seconds the event loop woke up later than scheduled.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None
        self.log = get_logger("observability.loop_lag")

    def start(self) -> None:
        """Start measuring on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._measure(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _measure(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - asked - self.interval)
            self.lag.observe(lag)
            if lag >= self.stall_threshold:
                self.log.warning(names.EVENT_LOOP_STALLED, lag_seconds=round(lag, 3))
