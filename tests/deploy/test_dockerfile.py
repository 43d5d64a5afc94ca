"""Dockerfile and .dockerignore: hadolint plus the image's own rules."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.deploy import (
    API_COMMAND,
    DOCKERFILE,
    REPO,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_excludes,
    dockerignore_patterns,
    require_tool,
)

DOCKERIGNORE = REPO / ".dockerignore"


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def final_stage(text: str) -> list[tuple[str, str]]:
    return dockerfile_stages(text)[-1]


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("hadolint")
    return subprocess.run(
        [tool, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


def test_hadolint_reports_nothing() -> None:
    """hadolint finds no issue in the Dockerfile, down to info level."""
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is live: an untagged base image and a root runtime are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD python app.py\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_build_is_multi_stage_on_slim_python_311(text: str) -> None:
    """A builder stage and a runtime stage, both on a slim Python 3.11 base."""
    stages = dockerfile_stages(text)
    assert len(stages) >= 2
    args = dict(
        a.split("=", 1) for k, a in dockerfile_instructions(text) if k == "ARG" and "=" in a
    )
    for stage in stages:
        base = stage[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    assert stages[0][0][1].split()[-1] == "builder"
    copies = [a for k, a in stages[-1] if k == "COPY"]
    assert any(a.startswith("--from=builder ") for a in copies)


def test_builder_installs_the_project_without_dev_extras(text: str) -> None:
    """The builder builds the project from pyproject.toml and installs no dev extras."""
    builder = dockerfile_stages(text)[0]
    runs = " && ".join(a for k, a in builder if k == "RUN")
    copies = " ".join(a for k, a in builder if k == "COPY")
    assert "pyproject.toml" in copies
    assert re.search(r"pip (wheel|install)\b[^&]*\s\.(\s|$)", runs), runs
    assert "[dev]" not in text and ".[" not in text


def test_runtime_runs_as_a_non_root_user(final_stage: list[tuple[str, str]]) -> None:
    """The last USER of the runtime stage is a non-root user."""
    users = [a for k, a in final_stage if k == "USER"]
    assert users, "runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_data_volume_is_owned_by_the_runtime_user(final_stage: list[tuple[str, str]]) -> None:
    """/data is created, chowned to the runtime user (uid 10001) and declared a volume."""
    runs = " ".join(a for k, a in final_stage if k == "RUN")
    assert "mkdir -p /data" in runs and "chown app:app /data" in runs
    assert "--uid 10001" in runs
    assert [a for k, a in final_stage if k == "USER"][-1].startswith("10001")
    volumes = [a for k, a in final_stage if k == "VOLUME"]
    assert volumes and "/data" in _exec_form(volumes[-1])
    envs = " ".join(a for k, a in final_stage if k == "ENV")
    assert "NOTIFY_DATA_DIR=/data" in envs


def test_healthcheck_probes_healthz_with_urllib(final_stage: list[tuple[str, str]]) -> None:
    """HEALTHCHECK calls /healthz on port 8000 with Python's urllib (slim has no curl)."""
    checks = [a for k, a in final_stage if k == "HEALTHCHECK"]
    assert len(checks) == 1
    command = _exec_form(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "127.0.0.1:8000/healthz" in command[2]
    assert "timeout=" in command[2]


def test_default_command_is_the_contract_api_entry_point(
    final_stage: list[tuple[str, str]],
) -> None:
    """CMD is `uvicorn --factory service.main:create_app` on 0.0.0.0:8000, in exec form."""
    cmds = [a for k, a in final_stage if k == "CMD"]
    assert _exec_form(cmds[-1]) == API_COMMAND
    assert not [a for k, a in final_stage if k == "ENTRYPOINT"]


def test_exposes_api_and_worker_metrics_ports(final_stage: list[tuple[str, str]]) -> None:
    """EXPOSE lists 8000 (API) and 9101 (worker metrics)."""
    exposed = {p for k, a in final_stage if k == "EXPOSE" for p in a.split()}
    assert {"8000", "9101"} <= exposed


def test_dockerignore_keeps_junk_out_of_the_context() -> None:
    """.venv, .git, caches, local data, tests and egg-info never enter the build context."""
    patterns = dockerignore_patterns(DOCKERIGNORE)
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v/x",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "data/log.txt",
        "tests/test_x.py",
        "service/__pycache__/main.cpython-311.pyc",
        "observable_notify.egg-info/PKG-INFO",
        ".env",
    ):
        assert dockerignore_excludes(patterns, path), path


def test_dockerignore_keeps_what_the_dockerfile_copies(text: str) -> None:
    """Every local COPY source of the Dockerfile exists and is part of the build context."""
    patterns = dockerignore_patterns(DOCKERIGNORE)
    sources: list[str] = []
    for keyword, args in dockerfile_instructions(text):
        if keyword != "COPY" or args.startswith("--from="):
            continue
        sources.extend(args.split()[:-1])
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY source {source} is missing"
        probe = source
        if path.is_dir():
            files = [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            assert files, f"{source} has no Python files"
            probe = str(files[0].relative_to(REPO))
        assert not dockerignore_excludes(patterns, probe), f"{probe} is excluded"
