"""``POST /notifications`` on the service app run in this process: 202 with the task at
``Location`` and the task really run, 422 naming the field for bad input, and the answers
documented in the OpenAPI schema."""

from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.support.idempotency import ServiceApp, Session


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_email_is_accepted_with_location_and_runs(tmp_path: Path) -> None:
    """An e-mail answers 202 {"id", "task_ids"} with Location /tasks/{id}; the task succeeds
    and leaves its line in log.txt."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> tuple[Any, dict[str, Any]]:
        response = await session.post(
            "/notifications",
            json={"channel": "email", "to": "user@example.com", "text": "hi", "subject": "S"},
        )
        return response, await session.task_finished(response.json()["id"])

    response, task = service.run(body)
    assert response.status_code == 202
    answer = response.json()
    assert answer == {"id": answer["id"], "task_ids": [answer["id"]]}
    assert response.headers["location"] == f"/tasks/{answer['id']}"
    assert "idempotent-replayed" not in response.headers
    assert task["state"] == "succeeded"
    assert lines(tmp_path / "log.txt") == ["message to user@example.com"]
    assert service.enqueued("write_log") == 1


def test_sms_is_accepted_and_runs(tmp_path: Path) -> None:
    """An SMS answers 202 with Location; its task appends phone:text to sms_log.txt."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> tuple[Any, dict[str, Any]]:
        response = await session.post(
            "/notifications", json={"channel": "sms", "to": "+8613812345678", "text": "你好"}
        )
        return response, await session.task_finished(response.json()["id"])

    response, task = service.run(body)
    assert response.status_code == 202
    assert response.headers["location"] == f"/tasks/{response.json()['id']}"
    assert task["state"] == "succeeded"
    assert lines(tmp_path / "sms_log.txt") == ["+8613812345678:你好"]
    assert service.enqueued("sms_task") == 1


EMAIL = {"channel": "email", "to": "user@example.com", "text": "hello"}
SMS = {"channel": "sms", "to": "+8613812345678", "text": "hello"}


@pytest.mark.parametrize(
    ("request_body", "field", "words"),
    [
        (EMAIL | {"to": "not-an-email"}, "to", "e-mail"),
        (EMAIL | {"to": "user@localhost"}, "to", "e-mail"),
        (SMS | {"to": "13812345678"}, "to", "E.164"),
        (SMS | {"to": "+86 138 1234 5678"}, "to", "E.164"),
        (SMS | {"to": "user@example.com"}, "to", "E.164"),
        (EMAIL | {"to": "+8613812345678"}, "to", "e-mail"),
        (EMAIL | {"text": "x" * 11}, "text", "at most 10"),
        (SMS | {"text": ""}, "text", "at least 1"),
        (EMAIL | {"text": "a\x00b"}, "text", "NUL"),
        (b'{"channel": "email", "to": "u@example.com", "text": "\\ud800"}', "text", "surrogate"),
        (EMAIL | {"subject": "Hi\r\nBcc: victim@example.com"}, "subject", "line breaks"),
        (EMAIL | {"subject": "Hi\u2028there"}, "subject", "line breaks"),
        (EMAIL | {"subject": "s" * 201}, "subject", "at most 200"),
        (SMS | {"subject": "no subject for SMS"}, "subject", "Extra inputs"),
        ({"to": "user@example.com", "text": "hello"}, "channel", "channel"),
        (EMAIL | {"channel": "fax"}, "channel", "channel"),
        ({"channel": "email", "to": "user@example.com"}, "text", "Field required"),
    ],
    ids=[
        "bad-email",
        "email-without-dotted-domain",
        "phone-without-plus",
        "phone-with-spaces",
        "email-as-phone",
        "phone-as-email",
        "over-long-text",
        "empty-text",
        "nul-in-text",
        "lone-surrogate",
        "subject-crlf",
        "subject-line-separator",
        "over-long-subject",
        "subject-on-sms",
        "no-channel",
        "unknown-channel",
        "no-text",
    ],
)
def test_bad_input_is_422_naming_the_field(
    tmp_path: Path, request_body: dict[str, Any] | bytes, field: str, words: str
) -> None:
    """Invalid e-mail, phone, text, subject or channel: 422 whose detail names the field and
    says what is wrong; nothing is enqueued."""
    service = ServiceApp(Settings(data_dir=tmp_path, max_text_length=10))

    async def body(session: Session) -> Any:
        if isinstance(request_body, bytes):  # JSON that Python's encoder would not write
            json_type = {"content-type": "application/json"}
            return await session.post("/notifications", content=request_body, headers=json_type)
        return await session.post("/notifications", json=request_body)

    response = service.run(body)
    assert response.status_code == 422
    (issue,) = response.json()["detail"]
    assert field in issue["loc"] or f"'{field}'" in issue["msg"], issue
    assert words in issue["msg"], issue
    assert service.enqueued("write_log") == service.enqueued("sms_task") == 0


def test_control_characters_in_text_are_written_as_one_escaped_line(tmp_path: Path) -> None:
    """Text with line breaks and other control characters is accepted (the sink escapes it):
    one line per accepted record."""
    service = ServiceApp(Settings(data_dir=tmp_path))

    async def body(session: Session) -> Any:
        response = await session.post("/notifications", json=SMS | {"text": "a\nb\x1b[31m"})
        await session.task_finished(response.json()["id"])
        return response

    assert service.run(body).status_code == 202
    assert lines(tmp_path / "sms_log.txt") == ["+8613812345678:a\\nb\\x1b[31m"]


def test_openapi_documents_the_answers_and_the_header() -> None:
    """/openapi.json: POST /notifications documents 202 (Location), 400, 409, 422, 503 and the
    request body's two shapes; every POST declares the Idempotency-Key header."""
    service = ServiceApp(Settings())
    schema = service.app.openapi()
    operation = schema["paths"]["/notifications"]["post"]
    responses = operation["responses"]
    assert {"202", "400", "409", "413", "422", "503"} <= set(responses)
    assert "Location" in responses["202"]["headers"]
    assert "Retry-After" in responses["409"]["headers"]
    assert responses["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NotificationAccepted"
    }
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["discriminator"]["propertyName"] == "channel"
    assert set(body_schema["discriminator"]["mapping"]) == {"email", "sms"}
    posts = [path for path, item in schema["paths"].items() if "post" in item]
    assert len(posts) == 5
    for path in posts:
        post = schema["paths"][path]["post"]
        headers = [p["name"] for p in post.get("parameters", []) if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], path
        assert {"400", "409", "422", "503"} <= set(post["responses"]), path
