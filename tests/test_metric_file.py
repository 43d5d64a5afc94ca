"""Reading a multiprocess metric file through its remembered layout
(``observability.metrics.metric_file``): always the file's current keys and values."""

from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from observability.metrics import metric_file


def library_read(path: Path) -> list[tuple[str, float, float]]:
    """The entries as prometheus-client reads them."""
    found = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    return [(key, value, timestamp) for key, value, timestamp, _ in found]


def read(path: Path) -> list[tuple[str, float, float]]:
    return list(zip(*metric_file.read(str(path)), strict=True))


def test_values_and_appended_entries_are_read_at_every_read(tmp_path: Path) -> None:
    """A value written since the last read, and an entry appended since, are both read."""
    path = tmp_path / "counter_1.db"
    data = MmapedDict(str(path))  # type: ignore[no-untyped-call]
    try:
        data.write_value("a", 1.0, 10.0)  # type: ignore[no-untyped-call]
        data.write_value("key of another length", 2.0, 0.0)  # type: ignore[no-untyped-call]
        assert read(path) == library_read(path)
        data.write_value("a", 5.0, 11.0)  # type: ignore[no-untyped-call]
        assert (
            read(path)
            == library_read(path)
            == [
                ("a", 5.0, 11.0),
                ("key of another length", 2.0, 0.0),
            ]
        )
        data.write_value("new", 3.0, 0.0)  # type: ignore[no-untyped-call]
        assert read(path) == library_read(path)
        assert len(read(path)) == 3
    finally:
        data.close()  # type: ignore[no-untyped-call]


def test_a_file_replaced_by_one_of_the_same_size_is_read_afresh(tmp_path: Path) -> None:
    """A file replaced by another whose entries take the same room (an archive rewritten, a
    reused pid) is read with its own keys, not the remembered ones."""
    path = tmp_path / "counter_archive.db"
    for keys in (("aaaa", "bbbb"), ("cccc", "dddd")):
        path.unlink(missing_ok=True)
        data = MmapedDict(str(path))  # type: ignore[no-untyped-call]
        for n, key in enumerate(keys):
            data.write_value(key, float(n), 0.0)  # type: ignore[no-untyped-call]
        data.close()  # type: ignore[no-untyped-call]
        assert read(path) == library_read(path)
        assert [key for key, _, _ in read(path)] == list(keys)


def test_an_empty_file_has_no_entries(tmp_path: Path) -> None:
    """A file sized but with no entry yet reads as empty, as the library reads it."""
    path = tmp_path / "gauge_max_1.db"
    MmapedDict(str(path)).close()  # type: ignore[no-untyped-call]
    assert read(path) == library_read(path) == []
