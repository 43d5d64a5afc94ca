"""A real SMTP server process for tests (aiosmtpd), scriptable with faults, and its helper.

``python -m tests.support.smtp_server --port N --control-port M --record FILE`` accepts mail on
127.0.0.1:N and appends one JSON line per event to FILE: ``accepted`` (message id, envelope,
headers, body), ``fault`` (the scripted answer given, and where), ``auth`` (AUTH succeeded or
not; never the password). Options: ``--tls-cert``/``--tls-key`` offer STARTTLS (or, with
``--implicit-tls``, speak TLS from the first byte); ``--username``/``--password`` require AUTH.

The control port takes one JSON command a line and answers one JSON line:

* ``{"cmd": "script", "faults": [{"stage", "reply", "count"}...], "every": {"k", "stage",
  "reply"}}``: the next transactions get the listed faults in order (each ``count`` times);
  with ``every``, each k-th transaction reaching ``stage`` gets ``reply`` (deterministic);
* ``{"cmd": "release"}``: transactions held (``reply: "hold"``) go on and are accepted;
* ``{"cmd": "stats"}``: counters (connections, transactions, held, accepted).

``stage`` is ``connect``, ``mail``, ``rcpt`` or ``data``; ``reply`` an SMTP line such as
``"451 4.3.0 Try again later"``, or ``"drop"`` (close the connection without answering), or
``"hold"`` (``data`` only: wait for ``release``, then accept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

STAGES = ("connect", "mail", "rcpt", "data")


class Script:
    """Which answer the next transaction gets at each stage (a FIFO of faults, and an every-k
    rule); counters of what happened."""

    def __init__(self) -> None:
        self.faults: list[dict[str, Any]] = []
        self.every: dict[str, Any] | None = None
        self.seen = dict.fromkeys(STAGES, 0)
        self.held = 0
        self.accepted = 0
        self.connections = 0
        self.release = asyncio.Event()

    def set(self, faults: list[dict[str, Any]], every: dict[str, Any] | None) -> None:
        self.faults = [dict(f) for f in faults if int(f.get("count", 1)) > 0]
        self.every = every
        self.seen = dict.fromkeys(STAGES, 0)
        self.release = asyncio.Event()

    def answer(self, stage: str) -> str | None:
        """The scripted answer for this stage of the current transaction (None: the normal
        one)."""
        self.seen[stage] += 1
        if self.faults and self.faults[0]["stage"] == stage:
            fault = self.faults[0]
            fault["count"] = int(fault.get("count", 1)) - 1
            if fault["count"] <= 0:
                self.faults.pop(0)
            return str(fault["reply"])
        every = self.every
        if every and every["stage"] == stage and self.seen[stage] % int(every["k"]) == 0:
            return str(every["reply"])
        return None


class Recorder:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        line = {"kind": kind, "time": time.time(), "mono": time.monotonic(), **fields}
        self.file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.file.flush()


def build_smtp_class(script: Script, recorder: Recorder) -> type:
    from aiosmtpd.smtp import SMTP

    class ScriptedSMTP(SMTP):  # type: ignore[misc]
        async def _handle_client(self) -> None:
            script.connections += 1
            reply = script.answer("connect")
            if reply is not None:
                recorder.write("fault", stage="connect", reply=reply)
                if reply != "drop":
                    await self.push(reply)
                assert self.transport is not None
                self.transport.close()
                return
            await super()._handle_client()

    return ScriptedSMTP


class Handler:
    """aiosmtpd's hooks: the scripted faults, then the recording of accepted messages."""

    def __init__(self, script: Script, recorder: Recorder) -> None:
        self.script = script
        self.recorder = recorder

    def _fault(self, server: Any, stage: str, reply: str | None, **fields: Any) -> str | None:
        if reply is None:
            return None
        self.recorder.write("fault", stage=stage, reply=reply, **fields)
        if reply == "drop":
            server.transport.close()
            return "421 4.4.2 closing"  # never seen: the connection is closed already
        return reply

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        fault = self._fault(server, "mail", self.script.answer("mail"))
        if fault is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        fault = self._fault(server, "rcpt", self.script.answer("rcpt"), rcpt=address)
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=default_policy)
        message_id = str(message.get("Message-ID", ""))
        reply = self.script.answer("data")
        if reply == "hold":
            self.script.held += 1
            self.recorder.write("held", message_id=message_id)
            await self.script.release.wait()
            self.script.held -= 1
        else:
            fault = self._fault(server, "data", reply, message_id=message_id)
            if fault is not None:
                return fault
        body = message.get_body(("plain",))
        self.script.accepted += 1
        self.recorder.write(
            "accepted",
            message_id=message_id,
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            headers={k: str(v) for k, v in message.items()},
            body=body.get_content() if body is not None else "",
            auth=session.authenticated,
            tls=server.transport.get_extra_info("ssl_object") is not None,
        )
        return "250 2.0.0 OK: queued"


async def control(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "script":
            script.release.set()
            script.set(command.get("faults", []), command.get("every"))
        elif cmd == "release":
            script.release.set()
        answer = {
            "connections": script.connections,
            "seen": script.seen,
            "held": script.held,
            "accepted": script.accepted,
        }
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    writer.close()


async def serve(options: argparse.Namespace) -> None:
    from aiosmtpd.smtp import AuthResult

    script = Script()
    recorder = Recorder(Path(options.record))
    smtp_class = build_smtp_class(script, recorder)
    handler = Handler(script, recorder)
    context: ssl.SSLContext | None = None
    if options.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.tls_cert, options.tls_key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            data is not None
            and data.login == options.username.encode()
            and data.password == options.password.encode()
        )
        recorder.write("auth", success=ok, mechanism=mechanism)
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def factory() -> Any:
        kwargs: dict[str, Any] = {"hostname": "test-smtp", "ident": "test-smtp"}
        if context is not None and not options.implicit_tls:
            kwargs["tls_context"] = context
        if options.username:
            kwargs |= {
                "authenticator": authenticator,
                "auth_required": True,
                # implicit TLS: encrypted from the first byte, which aiosmtpd does not see
                "auth_require_tls": context is not None and not options.implicit_tls,
                "auth_exclude_mechanism": ["LOGIN"],  # PLAIN only: one answer per attempt
            }
        return smtp_class(handler, **kwargs)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        "127.0.0.1",
        options.port,
        ssl=context if options.implicit_tls else None,
        reuse_address=True,
        backlog=512,
    )
    controller = await asyncio.start_server(
        lambda r, w: control(script, r, w), "127.0.0.1", options.control_port
    )
    async with server, controller:
        await asyncio.gather(server.serve_forever(), controller.serve_forever())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--tls-cert", default="")
    parser.add_argument("--tls-key", default="")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--username", default="")
    parser.add_argument("--password", default="")
    asyncio.run(serve(parser.parse_args()))


# -- the tests' side ---------------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key, made with the ``openssl`` CLI;
    the certificate is its own CA (pass it as ``NOTIFY_SMTP_CA_FILE``)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class SmtpServer:
    """The server above as a child process on free ports: ``script``, ``release``, ``stats``,
    ``messages`` (the accepted ones), ``events`` (everything recorded), ``stop``."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: tuple[Path, Path] | None = None,
        implicit_tls: bool = False,
        username: str = "",
        password: str = "",
    ) -> None:
        from tests.support.processes import ChildProcess, free_port

        self.port, self.control_port = free_port(), free_port()
        self.record = directory / f"smtp-{self.port}.jsonl"
        self.record.touch()
        command = [
            sys.executable, "-m", "tests.support.smtp_server",
            "--port", str(self.port), "--control-port", str(self.control_port),
            "--record", str(self.record),
        ]  # fmt: skip
        if tls is not None:
            command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if implicit_tls:
            command.append("--implicit-tls")
        if username:
            command += ["--username", username, "--password", password]
        self.process = ChildProcess(command, directory / f"smtp-{self.port}.log", {}, name="smtp")
        from tests.support.polling import wait_until

        wait_until(self._listening, timeout=20, what="the SMTP server to listen")

    def _listening(self) -> bool:
        self.process.check_alive()
        try:
            self.stats()
        except OSError:
            return False
        return True

    def _command(self, **command: Any) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as sock:
            sock.sendall(json.dumps(command).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        return answer

    def script(
        self, faults: list[dict[str, Any]] | None = None, every: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Replace the script (releasing anything held): ``faults`` for the next transactions,
        ``every`` for each k-th."""
        return self._command(cmd="script", faults=faults or [], every=every)

    def release(self) -> dict[str, Any]:
        return self._command(cmd="release")

    def stats(self) -> dict[str, Any]:
        return self._command(cmd="stats")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.record.read_text(encoding="utf-8").split("\n")[:-1]  # complete lines only
        found = [json.loads(line) for line in lines]
        return [e for e in found if kind is None or e["kind"] == kind]

    def messages(self) -> list[dict[str, Any]]:
        return self.events("accepted")

    def env(self, security: str = "none") -> dict[str, str]:
        """What points the service at this server."""
        return {
            "NOTIFY_EMAIL_CHANNEL": "smtp",
            "NOTIFY_SMTP_HOST": "127.0.0.1",
            "NOTIFY_SMTP_PORT": str(self.port),
            "NOTIFY_SMTP_SECURITY": security,
        }

    def stop(self) -> None:
        self.process.terminate(timeout=10)


if __name__ == "__main__":
    main()
