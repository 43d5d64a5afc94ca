"""The heap after start-up: what is alive once a process has started (modules, the app, its
metrics, tracer and settings) is left out of later garbage collections (``gc.freeze``), so a
full collection walks what the process allocated since, not everything it ever loaded. In a
started service a full collection then takes tens of microseconds instead of tens of
milliseconds, a pause every request and scrape arriving meanwhile used to wait for
(bench/profile.md). Frozen objects are never freed, so only start-up state belongs there."""

import gc
import threading

_lock = threading.Lock()
_holders = 0


def freeze() -> int:
    """Free the start-up garbage, then leave every object alive out of later collections until
    the matching ``thaw``. Returns how many objects are frozen."""
    global _holders
    with _lock:
        gc.collect()
        gc.freeze()
        _holders += 1
        return gc.get_freeze_count()


def thaw() -> None:
    """One ``freeze`` is over; after the last one the collector sees every object again."""
    global _holders
    with _lock:
        _holders = max(_holders - 1, 0)
        if not _holders:
            gc.unfreeze()
