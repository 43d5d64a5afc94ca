"""A real, local monitoring stack for tests and for grafana/render.py.

APIs run under real uvicorn, Celery workers are real ``celery -A service.worker worker``
processes on a real Redis, SMTP servers are real aiosmtpd servers, Prometheus is Debian's
/usr/bin/prometheus with a configuration derived from prometheus/prometheus.yml (targets on
localhost, 1 s intervals, the project's own rule files), and traffic is real HTTP. Nothing here
imports the service's code.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.fifo import FifoReader
from tests.support.polling import NOT_READY, wait_until
from tests.support.processes import (
    ROOT,
    ChildProcess,
    api_command,
    free_port,
    worker_command,
)
from tests.support.processes import (  # tools/render_docs.py imports it from here
    ephemeral_redis as ephemeral_redis,
)

PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"

# What Grafana would put in place of its built-in variables when querying this Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": "5m", "__interval": "15s"}


def local_prometheus_config(
    api_targets: str | list[str],
    worker_targets: list[str] | None = None,
    rule_files: list[Path] | None = None,
    interval: str = "1s",
) -> dict[str, Any]:
    """prometheus.yml with job ``api`` scraping ``api_targets`` and job ``worker`` scraping
    ``worker_targets`` (a static list in place of the DNS discovery; empty, as in a compose
    deployment without workers, when none is given), short intervals and absolute rule paths."""
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
    targets = [api_targets] if isinstance(api_targets, str) else list(api_targets)
    jobs["api"]["static_configs"] = [{"targets": targets}]
    worker = jobs["worker"]
    worker.pop("dns_sd_configs", None)
    worker["static_configs"] = [{"targets": list(worker_targets)}] if worker_targets else []
    return config


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


@dataclass(frozen=True)
class Member:
    """One process of the local stack: an API (``kind="api"``, scraped by job ``api``), a
    Celery worker (``kind="worker"``, job ``worker``) or an SMTP server (``kind="smtp"``, not
    scraped; ``handler``: its aiosmtpd handler class, empty for the accepting default). Members
    naming the same ``data_dir`` (a folder of the work dir) share their file sinks, as the API
    and its workers must. ``port`` 0: a free one, chosen at start."""

    name: str
    kind: str = "api"
    data_dir: str = "data"
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    handler: str = ""


@dataclass
class Running:
    """A started member: its process, port and data dir."""

    member: Member
    process: ChildProcess
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance(self) -> str:
        """The ``instance`` label Prometheus gives its series."""
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalStack:
    """APIs, Celery workers, SMTP servers and a Prometheus scraping them, all on 127.0.0.1."""

    apis: dict[str, Running]
    workers: dict[str, Running]
    prometheus: ChildProcess
    prom: PrometheusAPI
    smtp: dict[str, Running] = field(default_factory=dict)

    @property
    def api(self) -> Running:
        """The first API of the topology."""
        return next(iter(self.apis.values()))

    @property
    def api_url(self) -> str:
        return self.api.url

    @property
    def api_instance(self) -> str:
        return self.api.instance

    @property
    def data_dir(self) -> Path:
        return self.api.data_dir

    def check_alive(self) -> None:
        for running in (*self.apis.values(), *self.workers.values(), *self.smtp.values()):
            running.process.check_alive()
        self.prometheus.check_alive()


# The full topology (see full_topology): two APIs scraped by job `api`, one in-process and one
# publishing to Celery, a Celery worker (job `worker`) sharing the Celery API's data dir, and a
# third, deliberately saturated in-process API whose task runs time out and whose backlog
# overflows, so that timeouts, drops and 5xx answers are real rather than allow-listed. E-mail
# goes over SMTP: the in-process API's to a server that accepts it (delivered), the Celery
# side's to one that answers "try again later" to every recipient (transient ServerBusy errors,
# retried, never delivered), so delivery errors, retries and both delivery alerts are real too.
INPROCESS_API, CELERY_API, WORKER, STALLED_API = "api-inprocess", "api-celery", "worker", "stalled"
SMTP_SINK, SMTP_BUSY = "smtp-sink", "smtp-busy"
STALLED_TIMEOUT_SECONDS = 1


def break_log_sink(data_dir: Path) -> None:
    """``log.txt`` as a directory: every write_log / safe_write_log run fails for real."""
    (data_dir / "log.txt").mkdir()


def block_log_sink(data_dir: Path) -> None:
    """``log.txt`` as a FIFO nobody reads: opening it for writing blocks, so the run overruns
    its timeout (the stack's teardown opens a reader to let it finish)."""
    os.mkfifo(data_dir / "log.txt")


def smtp_env(port: int) -> dict[str, str]:
    """Settings of a member whose e-mail goes to the plain SMTP server on 127.0.0.1:``port``."""
    return {
        "NOTIFY_EMAIL_CHANNEL": "smtp",
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": str(port),
        "NOTIFY_SMTP_SECURITY": "none",
    }


def full_topology(broker_url: str) -> tuple[tuple[Member, ...], dict[str, Callable[[Path], None]]]:
    """The members of the full local stack and how to prepare each data dir."""
    sink, busy = free_port(), free_port()
    celery = {"NOTIFY_BROKER_URL": broker_url, **smtp_env(busy)}
    members = (
        Member(SMTP_SINK, "smtp", "smtp", port=sink),
        Member(SMTP_BUSY, "smtp", "smtp", port=busy, handler="tests.stack.smtp_servers.Busy"),
        Member(INPROCESS_API, "api", "data-inprocess", smtp_env(sink)),
        Member(CELERY_API, "api", "data-celery", {"NOTIFY_TASK_BACKEND": "celery", **celery}),
        Member(WORKER, "worker", "data-celery", {**celery, "NOTIFY_TASK_CONCURRENCY": "4"}),
        Member(
            STALLED_API,
            "api",
            "data-stalled",
            {
                "NOTIFY_TASK_CONCURRENCY": "1",
                "NOTIFY_TASK_BACKLOG": "1",
                "NOTIFY_TASK_TIMEOUT_SECONDS": str(STALLED_TIMEOUT_SECONDS),
            },
        ),
    )
    prepare = {
        "data-inprocess": break_log_sink,
        "data-celery": break_log_sink,
        "data-stalled": block_log_sink,
    }
    return members, prepare


def member_command(member: Member, port: int) -> list[str]:
    if member.kind == "api":
        return api_command(port)
    if member.kind == "worker":
        return worker_command(f"{member.name}-{port}")
    if member.kind == "smtp":
        handler = ["-c", member.handler] if member.handler else []
        return [sys.executable, "-m", "aiosmtpd", "-n", *handler, "-l", f"127.0.0.1:{port}"]
    raise ValueError(f"unknown member kind {member.kind!r}")


def member_ready(running: Running) -> bool:
    running.process.check_alive()
    if running.member.kind == "api":
        return httpx.get(f"{running.url}/healthz", timeout=2).status_code == 200
    if running.member.kind == "smtp":
        with socket.create_connection(("127.0.0.1", running.port), timeout=2):
            return True
    # A worker: its /metrics answers and Celery says it consumes.
    metrics_up = httpx.get(f"{running.url}/metrics", timeout=2).status_code == 200
    return metrics_up and "ready." in running.process.raw_output()


@contextlib.contextmanager
def local_stack(
    workdir: Path,
    prometheus_bin: str = "/usr/bin/prometheus",
    members: tuple[Member, ...] = (Member("api"),),
    prepare: dict[str, Callable[[Path], None]] | None = None,
) -> Iterator[LocalStack]:
    """Start the members (real uvicorn / real Celery workers) and Prometheus; stop all on exit.

    ``prepare`` maps a data dir name to a function called on it before anything starts."""
    data_dirs: dict[str, Path] = {}
    for member in members:
        if member.data_dir not in data_dirs:
            data_dirs[member.data_dir] = path = workdir / member.data_dir
            path.mkdir(parents=True, exist_ok=True)
            if prepare and member.data_dir in prepare:
                prepare[member.data_dir](path)
    started: dict[str, Running] = {}
    processes: list[ChildProcess] = []
    prom: PrometheusAPI | None = None
    try:
        for member in members:  # all start at once; readiness is awaited below
            port = member.port or free_port()
            env = {
                "NOTIFY_DATA_DIR": str(data_dirs[member.data_dir]),
                "NOTIFY_LOG_FORMAT": "json",
                "OTEL_SERVICE_NAME": f"notification-{member.kind}",
            }
            if member.kind == "worker":
                env["NOTIFY_WORKER_METRICS_PORT"] = str(port)
            env |= member.env
            process = ChildProcess(
                member_command(member, port), workdir / f"{member.name}.log", env, member.name
            )
            processes.append(process)
            started[member.name] = Running(member, process, port, data_dirs[member.data_dir])
        for running in started.values():
            wait_until(
                lambda r=running: member_ready(r),
                60,
                what=f"{running.member.name} to be ready",
                interval=0.25,
                ignore=NOT_READY,
            )

        apis = {n: r for n, r in started.items() if r.member.kind == "api"}
        workers = {n: r for n, r in started.items() if r.member.kind == "worker"}
        smtp = {n: r for n, r in started.items() if r.member.kind == "smtp"}
        config = local_prometheus_config(
            [r.instance for r in apis.values()], [r.instance for r in workers.values()]
        )
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        prom_port = free_port()
        prometheus = ChildProcess(
            [
                prometheus_bin,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
            {},
            "prometheus",
        )
        processes.append(prometheus)
        prom = PrometheusAPI(f"http://127.0.0.1:{prom_port}")
        stack = LocalStack(apis, workers, prometheus, prom, smtp)

        def all_scraped() -> bool:
            stack.check_alive()
            up = [t for t in prom.targets() if t["health"] == "up"]
            return len(up) == len(apis) + len(workers)

        wait_until(
            all_scraped,
            60,
            what="Prometheus to scrape every API and worker",
            interval=0.25,
            ignore=NOT_READY,
        )
        yield stack
    finally:
        if prom is not None:
            prom.close()
        # readers on every FIFO of the data dirs, so that writers blocked on them can finish
        fifos = [p for d in data_dirs.values() for p in d.iterdir() if p.is_fifo()]
        readers = [FifoReader(fifo) for fifo in fifos]
        for process in reversed(processes):
            process.terminate()
        for reader in readers:
            reader.stop()


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


def drive_all(api_urls: list[str], rounds: int, pause: float = 0.2) -> dict[str, int]:
    """drive_traffic on several APIs at once; the status counts summed."""
    with ThreadPoolExecutor(max_workers=len(api_urls)) as pool:
        results = list(pool.map(lambda url: drive_traffic(url, rounds, pause), api_urls))
    total: dict[str, int] = {}
    for counts in results:
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    return total


def overflow_backlog(api_url: str, attempts: int = 40) -> dict[str, int]:
    """On the stalled API (concurrency 1, backlog 1, ``log.txt`` a FIFO nobody reads): the
    first write_log run blocks, is reported ``timeout`` after the deadline and keeps the only
    slot; the next one waits in the backlog, and the request after it is refused with 503
    ``backlog_full``. Posts until that 503 (at once on later calls); returns the status counts."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=api_url, timeout=10) as client:
        for _ in range(attempts):
            response = client.post("/send-notification/stalled@example.com")
            key = f"{response.status_code // 100}xx"
            counts[key] = counts.get(key, 0) + 1
            if response.status_code == 503:
                break
            time.sleep(0.05)
    return counts
