"""The contract's ``notification_delivery_*`` metrics: one delivery attempt (one call to an
SMTP server or an SMS provider, or one file write) by channel and result, with a bounded error
class of its own."""

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from observability import names

DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("channel", "result")
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.attempts = Counter(
            names.DELIVERY_ATTEMPTS, "Delivery attempts, by channel and result.", labels,
            registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            names.DELIVERY_DURATION,
            "Seconds one delivery attempt took, from connecting to accepted (or refused).",
            labels,
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            names.DELIVERY_ERRORS,
            "Failed delivery attempts, by channel and error class.",
            ("channel", "error"),
            registry=registry,
        )
        self.skipped = Counter(
            names.DELIVERY_SKIPPED,
            "Deliveries not attempted because the task's message was delivered before (a "
            "redelivered or retried task).",
            ("channel",),
            registry=registry,
        )

    def series(self, channel: str, result: str) -> tuple[Any, Any]:
        """The (attempts counter, duration histogram) children of ``channel`` and ``result``,
        resolved once (``labels()`` costs a lock and a validation per call)."""
        found = self._series.get((channel, result))
        if found is None:
            found = self._series[(channel, result)] = (
                self.attempts.labels(channel, result),
                self.duration.labels(channel, result),
            )
        return found

    def declare(self, channels: Iterable[str]) -> None:
        """Create the series of ``channels`` at zero."""
        for channel in channels:
            for result in names.DELIVERY_RESULTS:
                self.series(channel, result)
            self.skipped.labels(channel)
