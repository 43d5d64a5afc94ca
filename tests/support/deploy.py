"""Helpers shared by the deployment checks (compose file, Dockerfile, backend configs).

There is no Docker engine where these tests run: files are checked with real validators where
one is installable (pyproject dev extras) and structurally otherwise. A missing
validator is a test failure, never a skip.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

CONTRACT_SETTINGS = {
    "NOTIFY_DATA_DIR": "./data",
    "NOTIFY_TASK_BACKEND": "inprocess",
    "NOTIFY_BROKER_URL": "redis://localhost:6379/0",
    "NOTIFY_TASK_TIMEOUT_SECONDS": "30",
    "NOTIFY_LOG_FORMAT": "json",
    "NOTIFY_TASK_CONCURRENCY": "8",
    "NOTIFY_TASK_BACKLOG": "10000",
    "NOTIFY_SHUTDOWN_GRACE_SECONDS": "25",
    "NOTIFY_WORKER_METRICS_PORT": "9101",
}

API_COMMAND = [
    "uvicorn",
    "--factory",
    "service.main:create_app",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
]


def require_tool(name: str) -> str:
    """Path of a validator executable; fails the test (no skip) when it is not installed."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"validator {name!r} is not installed; run `make test` (it installs the dev extras)",
            pytrace=False,
        )
    return found


# --- Compose variable interpolation (the subset of the Compose Specification we use) -------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (${VAR:?msg} / ${VAR?msg}) is missing."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e} and $$ like Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env
        empty = present and env[name] == ""
        if op in (":-", "-"):
            use_default = not present or (op == ":-" and empty)
            return arg if use_default else env[name]
        if op in (":?", "?"):
            if not present or (op == ":?" and empty):
                raise InterpolationError(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return _VAR.sub(substitute, value)


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines ignored)."""
    result: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        result[key.strip()] = value.strip()
    return result


def parse_duration_seconds(text: str) -> float:
    """Compose duration ("1m30s", "35s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if not line:
            continue
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each stage starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions(text):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore patterns exclude `path`, as Docker decides it.

    Rules apply in order and the last one that matches wins (`!` re-includes); a rule matches
    a path when it matches the path itself or one of its parent folders.
    """
    import fnmatch

    def matches(pattern: str, candidate: str) -> bool:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            parts = candidate.split("/")
            return any(fnmatch.fnmatchcase("/".join(parts[i:]), tail) for i in range(len(parts)))
        return fnmatch.fnmatchcase(candidate, pattern)

    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = (raw[1:] if negate else raw).strip("/")
        if any(matches(pattern, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
