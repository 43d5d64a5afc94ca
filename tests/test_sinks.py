"""Line files: one record is one line whatever the text; writers never interleave."""

import multiprocessing
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from service.sinks import LineFile, escape, unescape


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_becomes_exactly_one_line(tmp_path_factory: object, text: str) -> None:
    """Any user text (line breaks, controls, separators, surrogates) is one recoverable line."""
    path = Path(tmp_path_factory.mktemp("sink")) / "log.txt"  # type: ignore[attr-defined]
    LineFile(path).append(f"+8613812345678:{text}\n")  # the sms_task record format
    content = path.read_bytes().decode("utf-8")
    assert content.endswith("\n")
    assert len(content.splitlines()) == 1
    assert unescape(content.removesuffix("\n")) == f"+8613812345678:{text}"


def test_escape_keeps_plain_text_and_tab() -> None:
    """Printable text, non-ASCII and tabs are written as they are."""
    assert escape("message to 用户@example.com\tok") == "message to 用户@example.com\tok"
    assert escape("a\\n") == "a\\\\n"


def test_one_trailing_newline_is_the_record_end(tmp_path: Path) -> None:
    """The tutorial's trailing newline ends the record; a second one is escaped."""
    sink = LineFile(tmp_path / "log.txt")
    sink.append("one\n")
    sink.append("two\n\n")
    assert (tmp_path / "log.txt").read_text() == "one\ntwo\\n\n"


def _write_many(path: str, tag: str, count: int) -> None:
    sink = LineFile(Path(path))
    for i in range(count):
        sink.append(f"{tag}-{i}-" + "x" * 5000)


def test_threads_and_processes_never_interleave(tmp_path: Path) -> None:
    """Concurrent writers in threads and processes leave only whole lines."""
    path = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_write_many, args=(str(path), f"p{n}", 200)) for n in range(2)
    ]
    threads = [
        threading.Thread(target=_write_many, args=(str(path), f"t{n}", 200)) for n in range(4)
    ]
    for worker in [*processes, *threads]:
        worker.start()
    for worker in [*processes, *threads]:
        worker.join(60)
    lines = path.read_text().splitlines()
    assert len(lines) == 6 * 200
    assert all(line.endswith("-" + "x" * 5000) and line.count("-") == 2 for line in lines)
