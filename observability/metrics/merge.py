"""The merge of a scrape in multiprocess mode: the values of every process's metric files added
up into families, exactly as prometheus-client's ``MultiProcessCollector.merge(files,
accumulate=True)`` makes them (same families, samples, values and order), for a third of its
instructions.

The library reads every entry of every file with a Python generator, parses every key with
``json.loads`` on each scrape (once per key per scrape) and works out, per entry, which labels a
gauge or a histogram bucket keeps. A key is the identity of a series (metric, sample name,
labels, help), never a value: here what is derived from it is worked out once per process and
remembered, and each file is read through its remembered layout (``metric_file``: its keys
checked, its values read, in one call). The values are read from the files on every scrape."""

import json
import os
from collections.abc import Iterable
from typing import NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from observability.metrics import metric_file

Labels = tuple[tuple[str, str], ...]
_KEYS_KEPT = 100_000  # distinct keys remembered (then forgotten all at once and parsed again)
# gauge modes (``live`` or not) combined into one series; the others (``all``) keep a series per
# process, with a ``pid`` label
_COMBINED = frozenset({"sum", "min", "max", "mostrecent"})


class Key(NamedTuple):
    """What a file's key says: its family, sample name, sorted labels and help, plus, for a
    histogram bucket, its bound and the labels without ``le``, and for a gauge its labels
    without any ``pid`` (what the library keeps of them in every mode but ``all``)."""

    family: str
    sample: str
    labels: Labels
    documentation: str
    bound: float | None
    without_le: Labels
    without_pid: Labels


_keys: dict[str, Key] = {}


def _key(text: str) -> Key:
    found = _keys.get(text)
    if found is None:
        if len(_keys) >= _KEYS_KEPT:
            _keys.clear()
        family, sample, label_map, help_text = json.loads(text)
        labels: Labels = tuple(sorted(label_map.items()))
        le = [value for name, value in labels if name == "le"]
        found = _keys[text] = Key(
            family,
            sample,
            labels,
            help_text,
            float(le[0]) if le else None,
            tuple(pair for pair in labels if pair[0] != "le"),
            tuple(pair for pair in labels if pair[0] != "pid"),
        )
    return found


# a file's keys (the same tuple while its layout holds, see ``metric_file``), parsed
_parsed_files: dict[int, tuple[tuple[str, ...], tuple[Key, ...]]] = {}


def _parsed(keys: tuple[str, ...]) -> tuple[Key, ...]:
    found = _parsed_files.get(id(keys))
    if found is None or found[0] is not keys:  # kept in here: its id is not reused meanwhile
        if len(_parsed_files) >= metric_file.REMEMBERED:
            _parsed_files.clear()
        found = _parsed_files[id(keys)] = (keys, tuple(_key(text) for text in keys))
    return found[1]


class _Family:
    """One family's entries as read (key, value, timestamp, the file's pid), before they are
    combined; ``mode`` is the multiprocess mode of the last gauge file read (as the library's)."""

    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.metric = Metric(name, help_text, kind)
        self.mode = ""
        self.entries: list[tuple[Key, float, float, str]] = []


def merged(files: Iterable[str]) -> list[Metric]:
    """The families of ``files`` (in that order), their values combined across files."""
    families: dict[str, _Family] = {}
    for file in files:
        parts = os.path.basename(file).split("_")
        kind = parts[0]
        try:
            keys, values, stamps = metric_file.read(file)
        except FileNotFoundError:
            if kind == "gauge" and parts[1].startswith("live"):
                continue  # reaped since it was listed
            raise
        pid = parts[2][:-3] if kind == "gauge" else ""
        for key, value, timestamp in zip(_parsed(keys), values, stamps, strict=True):
            family = families.get(key.family)
            if family is None:
                family = families[key.family] = _Family(key.family, key.documentation, kind)
            if kind == "gauge":
                family.mode = parts[1]
            family.entries.append((key, value, timestamp, pid))
    return [_combined(family) for family in families.values()]


def _combined(family: _Family) -> Metric:
    metric = family.metric
    if metric.type == "gauge":
        samples = _gauge(family)
    elif metric.type == "histogram":
        samples = _histogram(family)
    else:  # counters and summaries
        samples = {}
        for key, value, _, _ in family.entries:
            group = samples.setdefault(key.labels, {})
            sample = (key.sample, key.labels)
            group[sample] = group.get(sample, 0.0) + value
    metric.samples = [
        Sample(name, dict(labels), value)
        for group in samples.values()
        for (name, labels), value in group.items()
    ]
    return metric


Groups = dict[Labels, dict[tuple[str, Labels], float]]


def _gauge(family: _Family) -> Groups:
    """Gauge entries combined by the family's mode: per process (``all``: a ``pid`` label),
    or their sum, minimum, maximum, or most recent value."""
    mode = family.mode.removeprefix("live")
    samples: Groups = {}
    stamps: dict[Labels, dict[str, float]] = {}
    for key, value, timestamp, pid in family.entries:
        if mode not in _COMBINED:
            labels = (*key.labels, ("pid", pid))
            samples.setdefault(labels, {})[(key.sample, labels)] = value
            continue
        labels = key.without_pid
        sample = (key.sample, labels)
        if mode == "sum":
            group = samples.setdefault(labels, {})
            group[sample] = group.get(sample, 0.0) + value
        elif mode in ("min", "max"):
            group = samples.setdefault(labels, {})
            current = group.setdefault(sample, value)
            if (value < current) if mode == "min" else (value > current):
                group[sample] = value
        else:  # mostrecent: an entry never written (time 0) has no value
            latest = stamps.setdefault(labels, {})
            when = float(timestamp or 0)
            if latest.get(key.sample, 0.0) < when:
                samples.setdefault(labels, {})[sample] = value
                latest[key.sample] = when
    return samples


_bounds: dict[float, str] = {}


def _bound(bound: float) -> str:
    """A bucket's ``le`` as the library writes it (a few dozen bounds, fixed by the code)."""
    found = _bounds.get(bound)
    if found is None:
        if len(_bounds) >= _KEYS_KEPT:
            _bounds.clear()
        found = _bounds[bound] = str(floatToGoString(bound))  # type: ignore[no-untyped-call]
    return found


def _histogram(family: _Family) -> Groups:
    """Sums and counts added up, buckets added up per bound, then made cumulative (the count is
    the last bucket's)."""
    samples: Groups = {}
    buckets: dict[Labels, dict[float, float]] = {}
    for key, value, _, _ in family.entries:
        if key.bound is None:
            group = samples.setdefault(key.labels, {})
            sample = (key.sample, key.labels)
            group[sample] = group.get(sample, 0.0) + value
        else:
            bounds = buckets.setdefault(key.without_le, {})
            bounds[key.bound] = bounds.get(key.bound, 0.0) + value
    name = family.metric.name
    for labels, bounds in buckets.items():
        group = samples.setdefault(labels, {})
        total = 0.0
        for bound, value in sorted(bounds.items()):
            total += value
            group[(f"{name}_bucket", (*labels, ("le", _bound(bound))))] = total
        group[(f"{name}_count", labels)] = total
    return samples
