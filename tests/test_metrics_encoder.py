"""The scrape's encoder (``observability.metrics.encoder``) and the metrics port's server: the
same bytes as prometheus-client's encoders, exemplars included, whatever the metric kinds."""

import gzip
import http.client
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import NativeHistogram, Sample

from observability.metrics.encoder import choose, openmetrics_text, prometheus_text
from observability.metrics.exposition import serve_metrics
from tests.support.processes import free_port

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TRACE = {"trace_id": "0af7651916cd43dd8448eb211c80319c"}
AWKWARD = 'back\\slash "quoted"\nnew line, ünïcode'


def openmetrics_latest(registry: Collector) -> bytes:
    """prometheus-client's OpenMetrics text of ``registry``."""
    text: bytes = library_openmetrics(registry)  # type: ignore[no-untyped-call]
    return text


class Fixed(Collector):
    """Families made by hand: timestamps, ``_created``, gauge histograms, odd names."""

    def collect(self) -> Iterator[Metric]:
        created = CounterMetricFamily("jobs", "Jobs.", labels=["queue"], created=1700000000.5)
        created.add_metric(["a"], 3.0, created=1700000000.25, timestamp=1700000001.5)
        yield created
        gauge = GaugeMetricFamily("odd:name_seconds", "Help with \\ and\nnewline.", unit="seconds")
        gauge.add_metric([], 1.5e-7, timestamp=1700000002)
        yield gauge
        yield GaugeHistogramMetricFamily(
            "queue_age", "Ages.", buckets=[("1.0", 2.0), ("+Inf", 5.0)], gsum_value=7.5
        )
        yield HistogramMetricFamily(
            "sizes", "Sizes.", buckets=[("10.0", 1.0), ("+Inf", 4.0)], sum_value=123456789.0
        )


@pytest.fixture
def registry() -> CollectorRegistry:
    """Every kind of metric, with exemplars, awkward label values and special floats."""
    registry = CollectorRegistry()
    runs = Counter("runs", "Runs.", ["task", "outcome"], registry=registry)
    runs.labels("send", "ok").inc(3, exemplar=TRACE)
    runs.labels(AWKWARD, "failed").inc()
    duration = Histogram("run_seconds", "Run time.", ["task"], registry=registry)
    for value in (0.003, 0.2, 7.0, 99.0):
        duration.labels("send").observe(value, exemplar=TRACE)
    values = Gauge("values", "Special values.", ["kind"], registry=registry)
    for kind, value in (
        ("nan", float("nan")),
        ("inf", float("inf")),
        ("-inf", float("-inf")),
        ("big", 1.5e20),
        ("long", 123456789.125),
        ("negative", -0.5),
    ):
        values.labels(kind).set(value)
    Summary("latency", "Latency.", registry=registry).observe(0.25)
    Info("build", "Build.", registry=registry).info({"version": "1.2.3"})
    Enum("state", "State.", states=["up", "down"], registry=registry).state("down")
    Gauge("empty_labels", "No children yet.", ["x"], registry=registry)
    registry.register(Fixed())
    return registry


def test_openmetrics_is_the_library_text_byte_for_byte(registry: CollectorRegistry) -> None:
    """OpenMetrics 1.0.0 (exemplars, units, timestamps, created, escaping) is what
    prometheus-client writes."""
    ours = openmetrics_text(registry.collect())
    assert ours == openmetrics_latest(registry)
    assert b'# {trace_id="0af7651916cd43dd8448eb211c80319c"}' in ours


def test_prometheus_text_is_the_library_text_byte_for_byte(registry: CollectorRegistry) -> None:
    """Prometheus text 0.0.4 (renamed families, moved created/gsum series) is what
    prometheus-client writes."""
    assert prometheus_text(registry.collect()) == generate_latest(registry)


@pytest.mark.parametrize(
    "accept",
    [PROMETHEUS_ACCEPT, "", "text/plain", "application/openmetrics-text", "*/*"],
)
def test_the_chosen_encoder_writes_what_the_library_would(
    registry: CollectorRegistry, accept: str
) -> None:
    """Whatever the Accept header, the content type and the bytes are the library's."""
    from prometheus_client.exposition import choose_encoder

    library, library_type = choose_encoder(accept)
    encoder, content_type = choose(accept)
    assert content_type == library_type
    assert encoder(registry) == library(registry)


class Native(Collector):
    def collect(self) -> Iterable[Metric]:
        metric = Metric("native", "Native.", "histogram")
        value = NativeHistogram(count_value=1, sum_value=2.0, schema=1, zero_threshold=0.0,
                                zero_count=0)  # fmt: skip
        metric.samples.append(Sample("native", {}, 0.0, None, None, value))
        return [metric]


def test_native_histograms_are_left_to_the_library() -> None:
    """A family this encoder does not write makes the whole scrape the library's."""
    registry = CollectorRegistry()
    registry.register(Native())
    encoder, _ = choose(PROMETHEUS_ACCEPT)
    assert encoder(registry) == openmetrics_latest(registry)


def test_the_metrics_port_serves_the_same_text_gzipped_when_asked(
    registry: CollectorRegistry,
) -> None:
    """The port of its own (the Celery worker's too) answers a scrape with the library's bytes,
    gzipped when the scraper accepts it; other methods get the library's answer."""
    port = free_port()
    server = serve_metrics(port, registry)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Encoding") == "gzip"
        assert gzip.decompress(response.read()) == openmetrics_latest(registry)
        conn.request("POST", "/metrics")
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 405
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
