"""A real, local monitoring stack for tests and for grafana/render.py.

The API runs under real uvicorn, Prometheus is Debian's /usr/bin/prometheus with a configuration
derived from prometheus/prometheus.yml (targets on localhost, 1 s intervals, the project's own
rule files), and traffic is real HTTP. Nothing here imports the service's code.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
T = TypeVar("T")

# What Grafana would put in place of its built-in variables when querying this Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": "5m", "__interval": "15s"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def local_prometheus_config(
    api_target: str, rule_files: list[Path] | None = None, interval: str = "1s"
) -> dict[str, Any]:
    """prometheus.yml with the api job pointed at ``api_target``, no worker targets (no Celery
    worker runs locally: the job stays, empty, as in a compose deployment without workers),
    short intervals and absolute rule file paths."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    config["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    base = PROMETHEUS_YML.parent
    config["rule_files"] = (
        [str(p) for p in rule_files]
        if rule_files is not None
        else [str((base / f).resolve()) for f in config["rule_files"]]
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["api"]["static_configs"] = [{"targets": [api_target]}]
    worker = jobs["worker"]
    worker.pop("dns_sd_configs", None)
    worker["static_configs"] = []
    return config


@dataclass
class Process:
    """A subprocess whose output goes to a file; stopped by its own pid only."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        cmd: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        log = log_path.open("wb")
        popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(name, popen, log_path, log)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-4000:]}"
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()


class PrometheusAPI:
    """The few HTTP API calls the tests and the renderer need."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def _get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self._get("/api/v1/query", **params)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", **{"match[]": match}))

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_exemplars", query=expr, start=start, end=end))

    def rules(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def close(self) -> None:
        self.client.close()


class PromQLError(AssertionError):
    """Prometheus refused a query."""


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}, ${name:fmt}) as Grafana would."""
    values = {**GRAFANA_BUILTINS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


@dataclass
class LocalStack:
    """The API and a Prometheus scraping it, both on 127.0.0.1."""

    api_url: str
    api_instance: str
    data_dir: Path
    api: Process
    prometheus: Process
    prom: PrometheusAPI

    def stop(self) -> None:
        self.prom.close()
        for process in (self.prometheus, self.api):
            process.stop()


@contextlib.contextmanager
def local_stack(
    workdir: Path,
    prometheus_bin: str = "/usr/bin/prometheus",
    api_env: dict[str, str] | None = None,
    prepare_data_dir: Callable[[Path], None] | None = None,
) -> Iterator[LocalStack]:
    """Start uvicorn (the real app) and Prometheus; stop both on exit."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if prepare_data_dir is not None:
        prepare_data_dir(data_dir)
    api_port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "OTEL_"))}
    env |= {
        "NOTIFY_DATA_DIR": str(data_dir),
        "NOTIFY_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "OTEL_SERVICE_NAME": "notification-api",
    }
    env |= api_env or {}
    api = Process.start(
        "api",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "service.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
        ],
        workdir / "api.log",
        env=env,
    )
    processes = [api]
    prom: PrometheusAPI | None = None
    try:
        api_url = f"http://127.0.0.1:{api_port}"

        def api_healthy() -> bool:
            api.check_alive()
            return httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200

        wait_for(api_healthy, 30, "the API's /healthz")

        instance = f"127.0.0.1:{api_port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(local_prometheus_config(instance), sort_keys=False), encoding="utf-8"
        )
        prometheus = Process.start(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )
        processes.append(prometheus)
        prom = PrometheusAPI(f"http://127.0.0.1:{prom_port}")

        def api_scraped() -> bool:
            prometheus.check_alive()
            return any(
                t["labels"].get("job") == "api" and t["health"] == "up" for t in prom.targets()
            )

        wait_for(api_scraped, 60, "Prometheus to scrape the API")
        yield LocalStack(api_url, instance, data_dir, api, prometheus, prom)
    finally:
        if prom is not None:
            prom.close()
        for process in reversed(processes):
            process.stop()


def drive_traffic(api_url: str, rounds: int, pause: float = 0.2) -> dict[str, int]:
    """Call every notification endpoint ``rounds`` times, plus invalid requests (4xx).
    Returns a count of responses by status code class."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=api_url, timeout=10) as client:
        for i in range(rounds):
            responses = [
                client.post(f"/send-notification/user{i}@example.com"),
                client.post(
                    f"/advanced-notification/user{i}@example.com", params={"q": f"query {i}"}
                ),
                client.post("/send-sms", params={"phone": "+8613812345678", "msg": f"hi {i}"}),
                client.post("/safe-notify"),
                client.post("/send-sms", params={"phone": "not-a-phone", "msg": "hi"}),
                client.post("/send-notification/not-an-email"),
            ]
            for response in responses:
                key = f"{response.status_code // 100}xx"
                counts[key] = counts.get(key, 0) + 1
            time.sleep(pause)
    return counts
