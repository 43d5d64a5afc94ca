"""Compaction of the metric files of processes that are gone (prometheus-client's multiprocess
mode), so that a scrape's cost does not grow with every process that ever ran.

Each process writes files of its own (``counter_<pid>.db``, ``histogram_<pid>.db``,
``summary_<pid>.db``, ``gauge_<mode>_<pid>.db``), and those of a dead process stay: its counts
must keep counting. A scrape reads every file. Here the files of dead processes are merged, per
kind, into one archive each (``counter_archive.db``, ``gauge_max_archive.db``...): values added
up per series (counters, histogram buckets and sums, summaries, ``sum`` gauges), or their
maximum, minimum or most recent (``max``, ``min``, ``mostrecent`` gauges). The archive keeps the
processes' own entries (same keys), so the merged exposition stays what it was. prometheus-client
reads an archive like any process's file (for gauges, ``archive`` is the ``pid`` label it drops
in those modes). ``live*`` gauges of a dead process are dropped beforehand (``reap_dead``). So are
``all``-mode gauge files: their series carry a ``pid`` label (one series per process ever, which
no archive could keep apart); once a process is gone its ``all`` gauges go, as ``liveall`` ones do.

Readers (the scrape) take a shared ``flock`` on ``.compaction.lock`` while they list and read the
files, a compaction the exclusive one (``compaction_lock.py``, safe across a fork), so a reader
never sees a dead process's values twice or not at all (a counter going down: a reset for
Prometheus). Writers never lock: a live process's files are never touched. Float sums depend on
their order: where an archive's plain sum would make a scrape's total lower by a rounding error
than it was, the archive's value is raised by the least amount (``_no_lower_sums``).

Steps of a compaction, each safe to crash after (the lock is released when its holder dies):

1. stage: rename each file of a dead pid to ``<name>.compacting`` (a process started later with
   the same pid creates a fresh file, instead of continuing this one), then check the pid again:
   if it runs (reused, it may have opened the file before the rename) and has no file of that
   kind of its own, the file goes back (``os.link``: never over a file it created since);
2. write the new archives as ``<archive>.tmp``: the old archive and the staged files combined;
3. commit: write ``.compaction.journal`` (temp file, then rename): the archives to replace, the
   staged files to delete;
4. roll forward: replace the archives, delete the staged files, then the journal.

A crash before 3 leaves staged files (inputs of the next compaction) and temp files (deleted);
after 3, the next compaction finishes 4 first. A reader that finds a journal or staged files
(a compaction crashed: no one else holds the exclusive lock while it holds the shared one)
compacts before reading. No fsync: the directory lives in a temporary directory, whose files do
not survive a reboot anyway."""

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from observability.metrics.compaction_lock import LOCK, locked
from observability.metrics.directory import alive

__all__ = ["LOCK", "compact", "interrupted", "locked", "needed", "parse"]

JOURNAL = ".compaction.journal"
STAGED = ".compacting"
TEMP = ".tmp"
ARCHIVE = "archive"
_HEADER_BYTES = 8  # a file created and not sized yet holds no value

Entry = tuple[float, float]  # (value, timestamp)


def _sum(a: Entry, b: Entry) -> Entry:
    return a[0] + b[0], max(a[1], b[1])


def _max(a: Entry, b: Entry) -> Entry:
    return b if b[0] > a[0] else a


def _min(a: Entry, b: Entry) -> Entry:
    return b if b[0] < a[0] else a


def _latest(a: Entry, b: Entry) -> Entry:
    return b if b[1] > a[1] else a


# How the entries of one key combine, by kind (the file name before the pid), as
# ``MultiProcessCollector.merge`` combines them across files.
COMBINE: dict[str, Callable[[Entry, Entry], Entry]] = {
    "counter": _sum,
    "histogram": _sum,  # per bucket, not cumulative: as the processes write them
    "summary": _sum,
    "gauge_sum": _sum,
    "gauge_max": _max,
    "gauge_min": _min,
    "gauge_mostrecent": _latest,
}
DROPPED = frozenset({"gauge_all"})
MONOTONIC = frozenset({"counter", "histogram", "summary"})  # their sums must never go down


def parse(name: str) -> tuple[str, int] | None:
    """(kind, pid) of a process's file that compaction handles (``counter_12.db``,
    ``gauge_max_12.db``, staged or not), or None (archives, live gauges, anything else)."""
    stem = name.removesuffix(STAGED).removesuffix(".db")
    if stem == name.removesuffix(STAGED):
        return None
    kind, _, pid = stem.rpartition("_")
    if not pid.isdigit() or (kind not in COMBINE and kind not in DROPPED):
        return None
    return kind, int(pid)


def _dead_files(names: Iterable[str]) -> list[str]:
    """The files of processes that do not run now (not staged ones)."""
    running: dict[int, bool] = {}
    found = []
    for name in names:
        parsed = parse(name)
        if parsed is None or name.endswith(STAGED):
            continue
        pid = parsed[1]
        if pid not in running:
            running[pid] = alive(pid)
        if not running[pid]:
            found.append(name)
    return found


def interrupted(names: Iterable[str]) -> bool:
    """Whether a compaction crashed in the directory holding ``names`` (while no one holds the
    exclusive lock: else it may be under way)."""
    return any(name == JOURNAL or name.endswith(STAGED) for name in names)


def needed(path: Path) -> bool:
    """Whether ``path`` holds files of dead processes, or what a crashed compaction left."""
    names = os.listdir(path)
    return interrupted(names) or bool(_dead_files(names))


def compact(path: Path) -> int:
    """Merge the files of the dead processes of ``path`` into its archives (finishing or
    resuming a crashed compaction first); returns how many files went."""
    with locked(path, shared=False):
        _roll_forward(path)
        replace, staged = prepare(path)
        if staged:
            commit(path, replace, staged)
            _roll_forward(path)
        return len(staged)


def prepare(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Steps 1 and 2 (under the exclusive lock, no journal left): stage the dead processes'
    files, write the new archives; returns the (temp, archive) names and the staged files."""
    names = os.listdir(path)
    for name in names:
        if name.endswith(TEMP):
            (path / name).unlink(missing_ok=True)
    leftover = [name for name in names if name.endswith(STAGED)]
    staged = _confirm(path, leftover + _stage(path, _dead_files(names)))
    return (_write_archives(path, staged) if staged else []), staged


def commit(path: Path, replace: list[tuple[str, str]], staged: list[str]) -> None:
    """Step 3: from here on, the compaction is done (by whoever rolls it forward)."""
    journal = path / (JOURNAL + TEMP)
    journal.write_text(json.dumps({"replace": replace, "remove": staged}))
    os.replace(journal, path / JOURNAL)


def _stage(path: Path, names: list[str]) -> list[str]:
    staged = []
    for name in names:
        try:
            os.rename(path / name, path / (name + STAGED))
        except FileNotFoundError:  # gone meanwhile
            continue
        staged.append(name + STAGED)
    return staged


def _confirm(path: Path, staged: list[str]) -> list[str]:
    """The staged files that are a dead process's; a file of a pid that runs again, which has
    no file of that kind of its own, goes back (the new process may have opened it)."""
    kept = []
    for name in staged:
        parsed = parse(name)
        if parsed is not None and alive(parsed[1]):
            try:
                os.link(path / name, path / name.removesuffix(STAGED))
            except FileExistsError:  # the new process has its own: this one is the old one's
                kept.append(name)
            else:
                os.unlink(path / name)
            continue
        kept.append(name)
    return kept


def _write_archives(path: Path, staged: list[str]) -> list[tuple[str, str]]:
    """Write each kind's new archive (old archive + staged files) to a temp file; returns the
    (temp, archive) names."""
    by_kind: dict[str, list[str]] = {}
    for name in sorted(staged):
        parsed = parse(name)
        if parsed is not None and parsed[0] not in DROPPED:
            by_kind.setdefault(parsed[0], []).append(name)
    replace = []
    for kind, names in sorted(by_kind.items()):
        archive, temp = f"{kind}_{ARCHIVE}.db", f"{kind}_{ARCHIVE}.db{TEMP}"
        inputs = [archive, *names] if (path / archive).exists() else names
        values = combined((path / name for name in inputs), COMBINE[kind])
        if kind in MONOTONIC:
            _no_lower_sums(path, kind, names, values)
        write(path / temp, values)
        replace.append((temp, archive))
    return replace


def _no_lower_sums(path: Path, kind: str, staged: list[str], values: dict[str, Entry]) -> None:
    """Float addition depends on its order, and a scrape adds up a key's values in file-name
    order (``readable_files``): raise the archive's value of a key, by the least amount, where
    the scrape's total with the new archive would be lower than with the files it replaces (a
    counter going down by a rounding error is a reset to Prometheus). Live files are read once:
    their values only grow, and so does a total when one of its terms does."""
    archive = f"{kind}_{ARCHIVE}.db"
    live = {
        name: _raw(path / name)
        for name in os.listdir(path)
        if not name.endswith(STAGED) and (parse(name) or ("", 0))[0] == kind
    }
    before = live | {name.removesuffix(STAGED): _raw(path / name) for name in staged}
    if (path / archive).exists():
        before[archive] = _raw(path / archive)
    new = {key: value for key, (value, _) in values.items()}
    after = [new if name == archive else live[name] for name in sorted([*live, archive])]
    ordered = [before[name] for name in sorted(before)]
    for key, (value, timestamp) in values.items():
        floor = _total(ordered, key)
        for _ in range(64):
            if not _total(after, key) < floor:
                break
            value = new[key] = math.nextafter(value, math.inf)
        values[key] = (value, timestamp)


def _raw(file: Path) -> dict[str, float]:
    return {key: value for key, (value, _) in combined([file], _sum).items()}


def _total(files: list[dict[str, float]], key: str) -> float:
    """A key's total as a scrape adds it up: from 0.0, file after file (in name order)."""
    total = 0.0
    for values in files:
        total += values.get(key, 0.0)
    return total


def combined(files: Iterable[Path], combine: Callable[[Entry, Entry], Entry]) -> dict[str, Entry]:
    """The entries of ``files`` (raw keys: as the processes wrote them), combined per key."""
    values: dict[str, Entry] = {}
    for file in files:
        if file.stat().st_size < _HEADER_BYTES:
            continue
        entries = MmapedDict.read_all_values_from_file(str(file))  # type: ignore[no-untyped-call]
        for key, value, timestamp, _ in entries:
            current = values.get(key)
            entry = (value, timestamp)
            values[key] = entry if current is None else combine(current, entry)
    return values


def write(file: Path, values: dict[str, Entry]) -> None:
    """A metric file holding ``values``, as prometheus-client writes them."""
    file.unlink(missing_ok=True)
    data = MmapedDict(str(file))  # type: ignore[no-untyped-call]
    try:
        for key, (value, timestamp) in values.items():
            data.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        data.close()  # type: ignore[no-untyped-call]


def _roll_forward(path: Path) -> None:
    """Step 4: finish a committed compaction: replace the archives, delete the staged files."""
    try:
        journal = json.loads((path / JOURNAL).read_text())
    except FileNotFoundError:
        return
    for temp, archive in journal["replace"]:
        with contextlib.suppress(FileNotFoundError):  # replaced before a crash
            os.replace(path / temp, path / archive)
    for name in journal["remove"]:
        (path / name).unlink(missing_ok=True)
    (path / JOURNAL).unlink()
