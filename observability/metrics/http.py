"""The contract's ``http_server_*`` metrics."""

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from observability import names

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """The contract's ``http_server_*`` metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            names.HTTP_REQUEST_DURATION,
            "Seconds from request start until the response is sent.",
            ("method", "route", "status_code"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            names.HTTP_ACTIVE_REQUESTS,
            "Requests whose response is not sent yet.",
            ("method",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        # children by label values (bounded: methods are normalised, routes are templates)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Gauge | Histogram, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def active_for(self, method: str) -> Any:
        return self._child(self.active, method)

    def duration_for(self, method: str, route: str, status_code: str) -> Any:
        return self._child(self.duration, method, route, status_code)
