"""A real HTTP SMS provider process for tests (stdlib ``http.server``), scriptable with faults,
and its helper.

``python -m tests.support.sms_provider --port N --record FILE`` takes ``POST /sms`` (any path
but ``/_control/...``) and appends one JSON line per request to FILE: time, path, the
``Authorization`` and ``Idempotency-Key`` headers, the JSON body, the answer given and whether
it was a replay. Like a provider honouring ``Idempotency-Key``, a key whose message was
delivered (a 2xx answer) gets that first answer again, ``replayed``, and is not a new SMS; a
request that got a fault is not remembered (its retry is processed anew).

``POST /_control/script`` with ``{"rules": [{"status", "headers"?, "delay"?, "count"}...],
"every": {"k", "status", "headers"?}}`` replaces the script: the next requests (not replays)
get the rules in order, then each k-th request gets ``every``'s answer, the others 200.
``delay`` (seconds) answers that late; a delayed 200 is delivered (remembered) at once, as a
provider that accepted the message and was slow to say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Provider:
    def __init__(self, record: Path) -> None:
        self.lock = threading.Lock()
        self.file = record.open("a", encoding="utf-8")
        self.rules: list[dict[str, Any]] = []
        self.every: dict[str, Any] | None = None
        self.seen = 0
        self.delivered: dict[str, tuple[int, dict[str, Any]]] = {}

    def script(self, rules: list[dict[str, Any]], every: dict[str, Any] | None) -> None:
        with self.lock:
            self.rules = [dict(r) for r in rules if int(r.get("count", 1)) > 0]
            self.every = every
            self.seen = 0

    def answer(self, key: str | None) -> tuple[int, dict[str, str], float, bool, str]:
        """(status, headers, delay, replayed, fault) for a request with ``key``."""
        with self.lock:
            if key and key in self.delivered:
                return self.delivered[key][0], {}, 0.0, True, ""
            self.seen += 1
            rule: dict[str, Any] | None = None
            if self.rules:
                rule = self.rules[0]
                rule["count"] = int(rule.get("count", 1)) - 1
                if rule["count"] <= 0:
                    self.rules.pop(0)
            elif self.every and self.seen % int(self.every["k"]) == 0:
                rule = self.every
            status = int(rule.get("status", 200)) if rule else 200
            headers = dict(rule.get("headers", {})) if rule else {}
            delay = float(rule.get("delay", 0)) if rule else 0.0
            if status < 300 and key:
                self.delivered[key] = (status, {"id": key})
            fault = "" if rule is None else json.dumps(rule, sort_keys=True)
            return status, headers, delay, False, fault

    def write(self, line: dict[str, Any]) -> None:
        with self.lock:
            self.file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.file.flush()


def make_handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the service pools its connections

        def do_POST(self) -> None:
            received, mono = time.time(), time.monotonic()
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/_control/script"):
                command = json.loads(raw)
                provider.script(command.get("rules", []), command.get("every"))
                self._reply(200, {}, {"ok": True})
                return
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            key = self.headers.get("Idempotency-Key")
            status, headers, delay, replayed, fault = provider.answer(key)
            provider.write(
                {
                    "time": received,
                    "mono": mono,
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "idempotency_key": key,
                    "content_type": self.headers.get("Content-Type"),
                    "body": body,
                    "status": status,
                    "replayed": replayed,
                    "fault": fault,
                    "delay": delay,
                }
            )
            if delay:
                time.sleep(delay)
            answer = {"id": key, "status": "queued"} if status < 300 else {"error": status}
            self._reply(status, headers, answer)

        def _reply(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (a delayed answer)
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    options = parser.parse_args()
    provider = Provider(Path(options.record))
    server = ThreadingHTTPServer(("127.0.0.1", options.port), make_handler(provider))
    server.daemon_threads = True
    server.request_queue_size = 512
    server.serve_forever()


# -- the tests' side ---------------------------------------------------------------------------


class SmsProvider:
    """The provider above as a child process on a free port: ``script``, ``requests``
    (every one recorded), ``delivered_keys`` (distinct keys delivered, replays excluded),
    ``stop``."""

    def __init__(self, directory: Path) -> None:
        import httpx

        from tests.support.polling import wait_until
        from tests.support.processes import ChildProcess, free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/sms"
        self.record = directory / f"sms-{self.port}.jsonl"
        self.record.touch()
        self.process = ChildProcess(
            [
                sys.executable,
                "-m",
                "tests.support.sms_provider",
                "--port",
                str(self.port),
                "--record",
                str(self.record),
            ],
            directory / f"sms-{self.port}.log",
            {},
            name="sms-provider",
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

        def listening() -> bool:
            self.process.check_alive()
            try:
                self.script()
            except httpx.TransportError:
                return False
            return True

        wait_until(listening, timeout=20, what="the SMS provider to listen")

    def script(
        self, rules: list[dict[str, Any]] | None = None, every: dict[str, Any] | None = None
    ) -> None:
        self.client.post(
            "/_control/script", json={"rules": rules or [], "every": every}
        ).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        lines = self.record.read_text(encoding="utf-8").split("\n")[:-1]  # complete lines only
        return [json.loads(line) for line in lines]

    def delivered_keys(self) -> set[str]:
        return {
            r["idempotency_key"] for r in self.requests() if r["status"] < 300 and not r["replayed"]
        }

    def env(self, token: str) -> dict[str, str]:
        return {
            "NOTIFY_SMS_CHANNEL": "http",
            "NOTIFY_SMS_HTTP_URL": self.url,
            "NOTIFY_SMS_HTTP_TOKEN": token,
        }

    def stop(self) -> None:
        self.client.close()
        self.process.terminate(timeout=10)


if __name__ == "__main__":
    main()
