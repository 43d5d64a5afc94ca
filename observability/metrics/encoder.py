"""The text of a scrape: OpenMetrics 1.0.0 and Prometheus text 0.0.4, byte for byte what
prometheus-client's encoders write (names escaped with underscores), at a fraction of the cost.

prometheus-client 0.26 escapes every sample's name character by character, with a Python call
per character, on every scrape: 70% of a single process's ``GET /metrics`` went there and into
its per-label checks. Here a name (metric, sample or label name: a small set, fixed by the code)
is escaped once per process and remembered; label values (``\\``, newline and ``"``), values and
exemplars are written afresh on every scrape, from the values collected for it. Anything else
(another escaping scheme or version, native histograms) is left to prometheus-client."""

import math
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.exposition import generate_latest as text_of
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_of
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

Encoder = Callable[[Collector], bytes]

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
_NAMES_KEPT = 4096  # distinct names remembered per kind (they come from the code: a few hundred)


class _Unsupported(Exception):
    """A sample this encoder does not write (a native histogram): the library writes them all."""


class _Names:
    """Escaped names, worked out once each (``escape``: what prometheus-client does to one)."""

    def __init__(self, escape: Callable[[str], str]) -> None:
        self.escape = escape
        self.known: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        found = self.known.get(name)
        if found is None:
            if len(self.known) >= _NAMES_KEPT:
                self.known.clear()
            found = self.known[name] = self.escape(name)
        return found


def _legacy_label_runes(name: str) -> str:
    """An OpenMetrics sample name as prometheus-client writes it: every character outside
    ``[a-zA-Z_]`` (digits: but first) becomes ``_`` (colons too)."""
    return "".join(
        c if c.isascii() and (c.isalpha() or c == "_" or (c.isdigit() and i > 0)) else "_"
        for i, c in enumerate(name)
    )


_metric_names = _Names(escape_metric_name)
_label_names = _Names(escape_label_name)
_sample_names = _Names(_legacy_label_runes)


def _go_float(value: float) -> str:
    """``floatToGoString``, without its checks for the common case (a finite value whose
    ``repr`` needs no Go-style exponent)."""
    d = float(value)
    text = repr(d)
    if not math.isfinite(d) or (d > 0 and text.find(".") > 6):
        return str(floatToGoString(d))  # type: ignore[no-untyped-call]
    return text


def _escaped(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_label_sets: dict[tuple[tuple[str, str], ...], str] = {}
_LABEL_SETS_KEPT = 100_000  # distinct label sets remembered (a series each, at most)


def _labels(labels: dict[str, str]) -> str:
    """``{name="value",...}``, names sorted, or "" without labels (remembered per label set:
    a series's identity, not a value)."""
    if not labels:
        return ""
    key = tuple(labels.items())
    found = _label_sets.get(key)
    if found is None:
        if len(_label_sets) >= _LABEL_SETS_KEPT:
            _label_sets.clear()
        names = _label_names
        pairs = [f'{names[k]}="{_escaped(v)}"' for k, v in sorted(key)]
        found = _label_sets[key] = "{" + ",".join(pairs) + "}"
    return found


def _exemplar(metric: Metric, sample: Sample, exemplar: Exemplar) -> str:
    name = sample.name
    kind = metric.type
    if not (
        (kind == "counter" and name.endswith("_total"))
        or (kind == "gaugehistogram" and name.endswith("_bucket"))
        or (kind == "histogram" and (name.endswith("_bucket") or name == metric.name))
    ):
        raise ValueError(
            f"Metric {metric.name} has exemplars, but is not a histogram bucket or counter"
        )
    pairs = ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(exemplar.labels.items()))
    stamp = "" if exemplar.timestamp is None else f" {exemplar.timestamp}"
    return f" # {{{pairs}}} {_go_float(exemplar.value)}{stamp}"


def _openmetrics_family(metric: Metric, out: list[str]) -> None:
    name = _metric_names[metric.name]
    out.append(f"# HELP {name} {_escaped(metric.documentation)}\n# TYPE {name} {metric.type}\n")
    if metric.unit:
        out.append(f"# UNIT {name} {metric.unit}\n")
    sample_names = _sample_names
    for s in metric.samples:
        if s.native_histogram:
            raise _Unsupported
        exemplar = "" if not s.exemplar else _exemplar(metric, s, s.exemplar)
        stamp = "" if s.timestamp is None else f" {s.timestamp}"
        value = "" if s.value is None else _go_float(s.value)
        out.append(f"{sample_names[s.name]}{_labels(s.labels)} {value}{stamp}{exemplar}\n")


def openmetrics_text(metrics: Iterable[Metric]) -> bytes:
    """OpenMetrics 1.0.0 of ``metrics`` (``openmetrics.exposition.generate_latest``)."""
    out: list[str] = []
    for metric in metrics:
        try:
            _openmetrics_family(metric, out)
        except _Unsupported:
            raise
        except Exception as exception:
            exception.args = (*(exception.args or ("",)), metric)
            raise
    out.append("# EOF\n")
    return "".join(out).encode()


# prometheus-client's renaming of OpenMetrics types and families for the 0.0.4 text format
_TEXT_TYPES = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_TEXT_SUFFIXES = {"counter": "_total", "info": "_info"}
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")  # moved to gauges of their own


def _text_line(sample: Sample) -> str:
    if sample.native_histogram:
        raise _Unsupported
    stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    name = _metric_names[sample.name]
    return f"{name}{_labels(sample.labels)} {_go_float(sample.value)}{stamp}\n"


def _text_family(metric: Metric, out: list[str]) -> None:
    name = _metric_names[metric.name + _TEXT_SUFFIXES.get(metric.type, "")]
    help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    kind = _TEXT_TYPES.get(metric.type, metric.type)
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
    moved: dict[str, list[str]] = {}
    for s in metric.samples:
        suffix = s.name[len(metric.name) :] if s.name.startswith(metric.name) else ""
        if suffix in _OPENMETRICS_ONLY:
            moved.setdefault(suffix, []).append(_text_line(s))
        else:
            out.append(_text_line(s))
    for suffix, lines in sorted(moved.items()):
        name = _metric_names[metric.name + suffix]
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out.extend(lines)


def prometheus_text(metrics: Iterable[Metric]) -> bytes:
    """Prometheus text 0.0.4 of ``metrics`` (``exposition.generate_latest``)."""
    out: list[str] = []
    for metric in metrics:
        try:
            _text_family(metric, out)
        except _Unsupported:
            raise
        except Exception as exception:
            exception.args = (*(exception.args or ("",)), metric)
            raise
    return "".join(out).encode()


def _encode(
    ours: Callable[[Iterable[Metric]], bytes], library: Encoder, registry: Collector
) -> bytes:
    """``registry`` collected once, written by ``ours``, or by ``library`` if it can't."""
    metrics = list(registry.collect())
    try:
        return ours(metrics)
    except _Unsupported:
        return library(_Collected(metrics))


class _Collected(Collector):
    """Metrics collected already, for prometheus-client's encoders."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


_OURS: dict[str, Encoder] = {
    OPENMETRICS: partial(_encode, openmetrics_text, openmetrics_of),
    CONTENT_TYPE_LATEST: partial(_encode, openmetrics_text, openmetrics_of),  # no version asked
    CONTENT_TYPE_PLAIN_0_0_4: partial(_encode, prometheus_text, text_of),
}


def choose(accept: str) -> tuple[Encoder, str]:
    """The encoder and content type for an ``Accept`` header, as prometheus-client chooses
    them (``choose_encoder``): ours for OpenMetrics 1.0.0 and text 0.0.4 with names escaped with
    underscores (what Prometheus asks for), the library's for anything else."""
    library, content_type = choose_encoder(accept)
    return _OURS.get(content_type, library), content_type
