"""ISO 8601 UTC timestamps for log events, cheaply: the date and time of day are formatted once
per second, only the microseconds per call (every log event needs one)."""

import time

_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _SecondCache:
    """The formatted whole second last seen; replaced as one tuple, so threads share it safely."""

    def __init__(self) -> None:
        self.entry: tuple[int, str] = (-1, "")


_last = _SecondCache()


def iso(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 in UTC with microseconds: ``2026-11-30T03:00:00.123456Z``."""
    second = int(timestamp)
    cached_second, prefix = _last.entry
    if second != cached_second:
        prefix = time.strftime(_FORMAT, time.gmtime(second))
        _last.entry = (second, prefix)
    return f"{prefix}.{int((timestamp - second) * 1_000_000):06d}Z"
