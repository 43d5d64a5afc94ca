"""The one polling helper: wait for a condition under a deadline, never a bare sleep."""

import json
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

# What a service that is not up yet raises: ignored by the stack's readiness waits.
NOT_READY: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError, json.JSONDecodeError)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    *,
    what: str = "condition",
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail after
    ``timeout`` seconds. Exceptions of the ``ignore`` types count as "not yet" (the last one is
    in the failure message); any other exception fails at once."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)
