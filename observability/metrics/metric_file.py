"""Reading one multiprocess metric file (prometheus-client's format: the bytes in use as a 4-byte
integer, 4 bytes of padding, then entries: the key's length, the key in UTF-8, padding to 8
bytes, the value and the timestamp as doubles), its layout remembered between scrapes.

A process only appends entries to its file and never moves one, so the keys and positions read
at one scrape are those of the next. Each file's layout is kept as one ``struct`` format: a
scrape reads every key and value of the file in one ``unpack_from`` call, and checks the keys it
read against the remembered ones (a file replaced by another, an archive after a compaction or a
new process with a reused pid, has other keys, or another size: it is read entry by entry
again). Values are always those of the file at the time of the read."""

import mmap
import struct
from typing import NamedTuple

_INT = struct.Struct("=i")
_HEADER = 8
REMEMBERED = 4096  # files whose layout is kept (then forgotten all at once)


class Layout(NamedTuple):
    used: int  # bytes in use when the layout was read
    format: struct.Struct  # the key bytes, value and timestamp of every entry
    raw: tuple[bytes, ...]
    keys: tuple[str, ...]


_layouts: dict[str, Layout] = {}


def _contents(path: str) -> tuple[bytes, int]:
    """The file's bytes in use (as prometheus-client's reader reads them) and their count."""
    with open(path, "rb") as file:
        data = file.read(mmap.PAGESIZE)
        used: int = _INT.unpack_from(data, 0)[0]
        if used > len(data):
            data += file.read(used - len(data))
    return data, used


def _layout(data: bytes, used: int) -> Layout:
    """The layout of ``data``, read entry by entry."""
    parts = [f"={_HEADER}x"]
    raw = []
    pos = _HEADER
    while pos < used:
        length = _INT.unpack_from(data, pos)[0]
        if length + pos > used:
            raise RuntimeError("Read beyond file size detected, file is corrupted.")
        padded = length + (8 - (length + 4) % 8)
        parts.append(f"4x{length}s{padded - length}xdd")
        raw.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + padded + 16
    keys = tuple(key.decode("utf-8") for key in raw)
    return Layout(used, struct.Struct("".join(parts)), tuple(raw), keys)


def read(path: str) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """The keys, values and timestamps of the file at ``path``, in the file's order."""
    data, used = _contents(path)
    layout = _layouts.get(path)
    if layout is not None and layout.used == used:
        fields = layout.format.unpack_from(data, 0)
        if fields[0::3] == layout.raw:
            return layout.keys, fields[1::3], fields[2::3]
    if len(_layouts) >= REMEMBERED:
        _layouts.clear()
    layout = _layouts[path] = _layout(data, used)
    fields = layout.format.unpack_from(data, 0)
    return layout.keys, fields[1::3], fields[2::3]
