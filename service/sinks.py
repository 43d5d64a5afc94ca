"""Append-only line files: one record is exactly one line, whatever its text, and concurrent
writers (threads or processes) never interleave a line."""

import fcntl
import os
import re
import threading
from pathlib import Path

# backslash, control characters, line and paragraph separators, bidirectional controls (which
# can make a line display as something else), lone surrogates
_UNSAFE = re.compile(
    "[\\\\\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Make ``text`` a single safe line: backslash, line breaks (every character
    ``str.splitlines`` splits on), other control characters, bidirectional controls and lone
    surrogates become escapes."""
    return _UNSAFE.sub(_escape_char, text)


_UNESCAPE = re.compile(r"\\(\\|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def unescape(line: str) -> str:
    """The inverse of ``escape``."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r"}.get(token) or chr(int(token[1:], 16))

    return _UNESCAPE.sub(replace, line)


class LineFile:
    """A text file that grows one escaped line per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: str) -> None:
        """Append ``record`` (one trailing newline is dropped first) as exactly one line."""
        data = (escape(record.removesuffix("\n")) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)  # closing releases the lock
