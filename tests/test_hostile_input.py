"""Hostile input against a real uvicorn process: schemathesis over the live OpenAPI schema,
size limits, bytes that are not UTF-8, and text built to forge or disguise sink lines."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.sinks import unescape
from tests.support.accounting import wait_balanced
from tests.support.processes import ServiceProcess

BIDI_AND_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("hostile"), {})
    yield svc
    svc.close()


def test_schemathesis_finds_no_server_error_or_schema_violation(
    service: ServiceProcess, tmp_path: Path
) -> None:
    """schemathesis (coverage and fuzzing phases, deterministic, 50 examples per operation)
    against the live /openapi.json: no 5xx, every status code, header and body as documented.
    (positive_data_acceptance is left out: e-mail validation refuses reserved domains such as
    ``.test`` on purpose, which JSON Schema's ``format: email`` allows.)"""
    # A request whose invalid part also makes it too long is rightly refused as too long.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414",'
        ' "415", "422", "428", "429", "431"]\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{service.url}/openapi.json",
            "--max-examples",
            "50",
            "--generation-deterministic",
            "--exclude-checks",
            "positive_data_acceptance",
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


def raw_request(service: ServiceProcess, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes; the status code and body of the answer."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n", 414),
        (b"GET /healthz?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n", None),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"h" * 9000 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 1000, 431),
        (b"POST /safe-notify HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n", 413),
    ],
    ids=["long-url", "huge-url", "big-header", "many-headers", "declared-body"],
)
def test_size_limits_answer_a_clear_4xx(
    service: ServiceProcess, request_bytes: bytes, status: int | None
) -> None:
    """URL, headers, declared body beyond NOTIFY_MAX_*_BYTES: 414/431/413 with a JSON body
    naming the limit (far beyond the HTTP parser's own bound: its plain 4xx); never a 5xx."""
    code, body = raw_request(service, request_bytes + b"Connection: close\r\n\r\n")
    if status is None:
        assert 400 <= code < 500
    else:
        assert code == status
        assert json.loads(body)["limit_bytes"] > 0
    assert service.client.get("/healthz").status_code == 200


def test_chunked_body_beyond_the_limit_is_413(service: ServiceProcess) -> None:
    """A body with no Content-Length (chunked) is measured as it arrives: 413 past the limit,
    accepted below it."""
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    head = b"POST /safe-notify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += b"Connection: close\r\n\r\n"
    code, body = raw_request(service, head + chunk * 20 + b"0\r\n\r\n")
    assert code == 413 and json.loads(body)["detail"] == "request body too large"
    code, _ = raw_request(service, head + chunk * 2 + b"0\r\n\r\n")
    assert code == 200


def test_invalid_utf8_never_breaks_a_line(service: ServiceProcess) -> None:
    """Raw non-UTF-8 bytes in the path are a 4xx; percent-encoded ones in a query value are
    decoded with replacement characters and written as one line."""
    code, _ = raw_request(
        service,
        b"POST /send-notification/\xff\xfe@example.com HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= code < 500
    response = service.client.post("/send-sms?phone=%2B15551234567&msg=%ff%fe%0a%c3")
    assert response.status_code == 200
    wait_balanced(service)
    last = (service.data_dir / "sms_log.txt").read_text(encoding="utf-8").splitlines()[-1]
    assert unescape(last) == "+15551234567:\ufffd\ufffd\n\ufffd"


def test_hostile_text_is_one_plain_line_in_the_sink_and_the_logs(service: ServiceProcess) -> None:
    """Newlines, CR, NUL, ANSI escapes, bidi controls, separators, the longest allowed text:
    each accepted record is one line with none of those characters raw (escaped, reversible);
    one character more than the limit is a 422; the JSON logs stay one object per line."""
    texts = [
        "line\nforged +1:entry",
        "cr\ronly",
        "nul\x00byte",
        "\x1b[2J\x1b[31mred\x1b]0;title\x07",
        "evil\u202egnp.exe",
        "iso\u2066late\u2069 and \u200fmark\u061c",
        "sep\u2028par\u2029nel\x85",
        "x" * 1000,
    ]
    before = (
        (service.data_dir / "sms_log.txt").read_text(encoding="utf-8").splitlines()
        if (service.data_dir / "sms_log.txt").exists()
        else []
    )
    for text in texts:
        response = service.client.post("/send-sms", params={"phone": "+15551234567", "msg": text})
        assert response.status_code == 200, response.text
    too_long = service.client.post("/send-sms", params={"phone": "+15551234567", "msg": "x" * 1001})
    assert too_long.status_code == 422
    wait_balanced(service)
    lines = (service.data_dir / "sms_log.txt").read_text(encoding="utf-8").splitlines()
    written = lines[len(before) :]
    assert sorted(unescape(line) for line in written) == sorted(
        f"+15551234567:{text}" for text in texts
    )
    for line in written:
        assert not any(char in line for char in BIDI_AND_CONTROLS)
        assert all(char.isprintable() for char in line), repr(line)
    for raw_line in service.raw_output().splitlines():
        json.loads(raw_line)  # every log line is one whole JSON object
