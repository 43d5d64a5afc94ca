"""Security against a real uvicorn process: no personal data or message text in any output,
masking switchable, /metrics behind a token or on its own port, unguessable task ids."""

import re
import uuid
from typing import Any

import httpx

from tests.support.otlp import OtlpReceiver, otlp_env, span_attributes
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, free_port

EMAIL = "carol.private@example.org"
PHONE = "+447700900123"
MESSAGE = "meet me at the old mill 7pm"
QUERY = "confidential query words"
TOKEN = "s3cret-metrics-token-0123456789"
ALICE_EMAIL = "alice.secret@example.com"
ALICE_PHONE = "+8613812345678"


def span_dump(receiver: OtlpReceiver) -> str:
    """Every span's name, attributes, status message and events, as text."""
    parts = []
    for resource, span in receiver.spans:
        events = [(e.name, [(a.key, str(a.value)) for a in e.attributes]) for e in span.events]
        parts.append(repr((resource, span.name, span_attributes(span), span.status, events)))
    return "\n".join(parts)


def test_no_personal_data_or_message_text_in_any_output(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """Known e-mail, phone, message and query text, also in failing requests: none of them
    (nor their URL-encoded forms) in /metrics, exported spans or any log line."""
    service: ServiceProcess = start_service(**otlp_env(otlp_receiver), NOTIFY_ACCESS_LOG="true")
    client = service.client
    client.post(f"/send-notification/{EMAIL}")
    client.post(f"/advanced-notification/{EMAIL}", params={"q": QUERY})
    client.post("/send-sms", params={"phone": PHONE, "msg": MESSAGE})
    client.post("/send-sms", params={"phone": PHONE, "msg": MESSAGE + "x" * 2000})  # 422
    client.post("/send-sms", params={"phone": "not " + PHONE, "msg": MESSAGE})  # 422
    wait_until(lambda: len(otlp_receiver.named("background_task")) == 4)
    wait_until(lambda: len(otlp_receiver.named("POST")) >= 5)
    outputs = {
        "logs": service.raw_output(),
        "metrics": service.metrics() + service.metrics(openmetrics=True),
        "spans": span_dump(otlp_receiver),
    }
    secrets = [EMAIL, "carol.private", PHONE, PHONE[1:], "7700900123", MESSAGE, QUERY]
    secrets += [httpx.QueryParams({"v": s}).get("v") or s for s in secrets]
    secrets += ["carol.private%40", "%2B447700900123", "meet+me+at", "meet%20me", "confidential+"]
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {where}"
    # masked, not merely absent (uvicorn < 0.55 logs the path percent-encoded)
    assert "c***@example.org" in outputs["logs"] or "c***%40example.org" in outputs["logs"]
    assert "msg=***" in outputs["logs"] and "q=***" in outputs["logs"]


def test_masking_can_be_turned_off(start_service: Any) -> None:
    """NOTIFY_LOG_MASKING=false (debugging only) logs addresses and query values as they are."""
    service: ServiceProcess = start_service(NOTIFY_LOG_MASKING="false", NOTIFY_ACCESS_LOG="true")
    service.client.post(f"/send-notification/{EMAIL}")
    service.client.post("/send-sms", params={"phone": PHONE, "msg": "plain"})
    wait_until(lambda: "msg=plain" in service.raw_output())
    output = service.raw_output()
    assert "carol.private@example.org" in output or "carol.private%40example.org" in output


def test_metrics_token_is_required_and_never_logged(start_service: Any) -> None:
    """With NOTIFY_METRICS_TOKEN, /metrics is 401 (with WWW-Authenticate) without the token or
    with a wrong one, 200 with it; the token appears in no log line."""
    service: ServiceProcess = start_service(NOTIFY_METRICS_TOKEN=TOKEN)
    client = service.client
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "background_task" not in missing.text
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN):
        assert client.get("/metrics", headers={"Authorization": header}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "background_task_enqueued_total" in ok.text
    assert client.get("/healthz").status_code == 200  # nothing else needs the token
    assert TOKEN not in service.raw_output()


def test_metrics_on_their_own_port(start_service: Any) -> None:
    """With NOTIFY_METRICS_PORT, /metrics is served there (text and OpenMetrics) and is a 404
    on the API port."""
    port = free_port()
    service: ServiceProcess = start_service(NOTIFY_METRICS_PORT=str(port))
    assert service.client.get("/metrics").status_code == 404
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as metrics:
        text = wait_until(lambda: metrics.get("/metrics").text)
        assert "background_task_enqueued_total" in text
        openmetrics = metrics.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert openmetrics.text.rstrip().endswith("# EOF")
    assert service.client.post("/safe-notify").status_code == 200


def test_task_ids_are_random_uuid4(start_service: Any) -> None:
    """Task ids are 128-bit random UUIDs (version 4, 122 random bits) as 32 hex digits: no
    sequence, no timestamp, no repeats."""
    service: ServiceProcess = start_service()
    ids: list[str] = []
    for _ in range(100):
        ids += service.client.post(
            "/advanced-notification/a@example.com", params={"q": "x"}
        ).json()["task_ids"]
    assert len(set(ids)) == len(ids) == 200
    for task_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", task_id)
        parsed = uuid.UUID(hex=task_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every random hex position takes many values across 200 ids (no counter, no clock)
    for position in set(range(32)) - {12, 16}:
        assert len({task_id[position] for task_id in ids}) >= 10, position
    # a neighbour of a real id is not a task
    neighbour = f"{int(ids[0], 16) + 1:032x}"
    assert service.client.get(f"/tasks/{neighbour}").status_code == 404


def test_no_personal_data_in_metrics_spans_or_logs(
    start_service: Any, otlp_receiver: OtlpReceiver
) -> None:
    """E-mail addresses and phone numbers never reach /metrics, span data or logs."""
    service = start_service(**otlp_env(otlp_receiver), NOTIFY_ACCESS_LOG="true")
    service.client.post(f"/send-notification/{ALICE_EMAIL}")
    service.client.post(
        f"/advanced-notification/{ALICE_EMAIL}", params={"q": f"call {ALICE_PHONE}"}
    )
    service.client.post("/send-sms", params={"phone": ALICE_PHONE, "msg": f"mail {ALICE_EMAIL}"})
    service.client.post("/send-notification/bad@")
    wait_until(lambda: len(otlp_receiver.named("background_task")) == 4)
    wait_until(lambda: len(otlp_receiver.named("POST")) >= 4)
    secrets = (
        ALICE_EMAIL,
        "alice.secret",
        ALICE_PHONE,
        ALICE_PHONE[1:],
        "13812345678",
        "alice.secret%40",
    )
    output = service.raw_output()
    metrics = service.metrics() + service.metrics(openmetrics=True)
    spans = repr(
        [(s.name, span_attributes(s), [e.name for e in s.events]) for _, s in otlp_receiver.spans]
    )
    for secret in secrets:
        assert secret not in output
        assert secret not in metrics
        assert secret not in spans
    # masked in the access log, not just absent (uvicorn < 0.55 logs the path percent-encoded)
    assert "a***@example.com" in output or "a***%40example.com" in output
    assert "phone=***&msg=***" in output  # query values (phone, message text) are redacted
