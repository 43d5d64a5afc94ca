"""Quantiles of Prometheus histograms, as ``histogram_quantile`` computes them, for the delivery
part: the service's ``notification_delivery_duration_seconds`` scraped from ``/metrics``, and the
bare loop's own timings put in the same buckets (so both p99 are read the same way)."""

from __future__ import annotations

import bisect
import math
import urllib.request
from collections.abc import Iterable, Mapping

Buckets = dict[float, float]  # upper bound (le) -> cumulative count, +Inf included


def scrape_buckets(url: str, metric: str, labels: Mapping[str, str]) -> Buckets:
    """The cumulative buckets of histogram ``metric`` at ``url`` (Prometheus text), summed over
    the series whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{metric}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            out[le] = out.get(le, 0.0) + sample.value
    return out


def difference(after: Buckets, before: Buckets) -> Buckets:
    """The observations made between two scrapes."""
    return {le: n - before.get(le, 0.0) for le, n in after.items()}


def bucketed(values: Iterable[float], bounds: Iterable[float]) -> Buckets:
    """``values`` as a cumulative histogram with upper bounds ``bounds`` (and +Inf)."""
    edges = sorted(bounds)
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_left(edges, v)] += 1
    out: Buckets = {}
    total = 0
    for le, n in zip([*edges, math.inf], counts, strict=True):
        total += n
        out[le] = float(total)
    return out


def quantile(q: float, buckets: Buckets) -> float | None:
    """``histogram_quantile(q, ...)``: linear within the bucket holding rank ``q`` * count; the
    highest finite bound if that bucket is +Inf; None without observations."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    rank = q * buckets[edges[-1]]
    lower, below = 0.0, 0.0
    for le in edges:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below) if count > below else le
        lower, below = le, count
    return lower


def exact(q: float, values: list[float]) -> float | None:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
