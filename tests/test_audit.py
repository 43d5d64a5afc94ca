"""``make audit`` (tools/audit.py) tells "no known vulnerabilities" from "could not be audited":
pip-audit itself is replaced by a stand-in printing canned reports (the real one needs the
vulnerability service, which CI may not reach)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

CLEAN = {"dependencies": [{"name": "fastapi", "version": "0.115.0", "vulns": []}], "fixes": []}
VULNERABLE = {
    "dependencies": [
        {
            "name": "starlette",
            "version": "0.1.0",
            "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["0.2.0"], "description": "x"}],
        },
        {"name": "amqp", "skip_reason": "Dependency not found on PyPI"},
    ],
    "fixes": [],
}
UNAUDITED = {
    "dependencies": [
        {"name": "fastapi", "version": "0.115.0", "vulns": []},
        {"name": "amqp", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ],
    "fixes": [],
}


def run_audit(tmp_path: Path, report: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    stand_in = tmp_path / "pip_audit"
    stand_in.mkdir()
    output = "not json" if report is None else json.dumps(report)
    (stand_in / "__init__.py").write_text("")
    (stand_in / "__main__.py").write_text(f"print({output!r})\n")
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "audit.py")],
        env=os.environ | {"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("report", "status", "says"),
    [
        (CLEAN, 0, "no known vulnerabilities"),
        (VULNERABLE, 1, "VULNERABLE starlette 0.1.0: GHSA-xxxx (fixed in 0.2.0)"),
        (UNAUDITED, 3, "AUDIT INCOMPLETE: 1 of 2 dependencies could not be audited"),
        (None, 2, "pip-audit failed"),
    ],
    ids=["clean", "vulnerable", "unaudited", "broken"],
)
def test_audit_exit_status_says_what_was_found(
    tmp_path: Path, report: dict[str, Any] | None, status: int, says: str
) -> None:
    """0 clean, 1 vulnerable (always, even with skipped ones), 3 some dependency not audited
    (never a pass), 2 pip-audit broken."""
    result = run_audit(tmp_path, report)
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout + result.stderr
