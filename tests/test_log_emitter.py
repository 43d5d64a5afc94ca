"""The hot path's log emitter writes what the bound logger writes, in a real process."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One event both ways, per configuration; the timestamp is the only field that may differ.
_SCRIPT = textwrap.dedent(
    """
    import sys
    from observability.logs.configuration import configure_logging, get_logger
    from observability.logs.emitter import Emitter

    configure_logging(sys.argv[1], sys.argv[2])
    fields = {
        "task": "job", "outcome": "failure", "duration_seconds": 0.25, "attempts": 2,
        "error": "could not reach user@example.com at +8613812345678",
        "url": "/send-sms?phone=%2B8613812345678&message=hi",
        "nested": {"to": ["bob@example.com"]}, "trace_id": "ab" * 16, "span_id": "cd" * 8,
    }
    for method in ("info", "error"):
        getattr(get_logger("observability.runner", backend="inprocess"), method)(
            "task.failed", **fields
        )
        getattr(Emitter("observability.runner", backend="inprocess"), method)(
            "task.failed", dict(fields)
        )
    """
)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _lines(log_format: str, level: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, log_format, level],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [_TIMESTAMP.sub("<timestamp>", line) for line in proc.stdout.splitlines()]


def test_emitter_writes_the_bound_loggers_bytes_in_json() -> None:
    """JSON: the emitter's line is the bound logger's, key order and masking included."""
    bound_info, emitted_info, bound_error, emitted_error = _lines("json", "INFO")
    assert emitted_info == bound_info and emitted_error == bound_error
    record = json.loads(emitted_error)
    assert record["level"] == "error" and record["logger"] == "observability.runner"
    assert "user@example.com" not in emitted_error and "u***@example.com" in emitted_error
    assert "bob@example.com" not in emitted_error and "message=***" in emitted_error


def test_emitter_writes_the_bound_loggers_text_in_console_format() -> None:
    """Console format: the emitter's line is the bound logger's."""
    bound_info, emitted_info, bound_error, emitted_error = _lines("console", "INFO")
    assert emitted_info == bound_info and emitted_error == bound_error
    assert "task.failed" in emitted_error and not emitted_error.startswith("{")


def test_emitter_filters_by_the_configured_level() -> None:
    """Below the configured level the emitter writes nothing, as the bound logger."""
    bound_error, emitted_error = _lines("json", "WARNING")
    assert emitted_error == bound_error and json.loads(emitted_error)["level"] == "error"
