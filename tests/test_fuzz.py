"""Any input to the real service: never a 5xx; every accepted record is exactly one line."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.metrics import sample_value
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess

TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("fuzz"), {})
    yield svc
    svc.close()


def idle(service: ServiceProcess) -> bool:
    labels = {"task": "sms_task", "backend": "inprocess"}
    text = service.metrics()
    return sample_value(text, "background_task_enqueued_total", **labels) == sum(
        sample_value(text, "background_task_finished_total", outcome=outcome, **labels)
        for outcome in ("success", "failure", "timeout")
    )


def accepted_lines(service: ServiceProcess, name: str) -> int:
    path = service.data_dir / name
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(email=TEXT, q=st.one_of(st.none(), TEXT), phone=TEXT, msg=TEXT)
def test_no_input_is_a_server_error(
    service: ServiceProcess, email: str, q: str | None, phone: str, msg: str
) -> None:
    """Random e-mails, phones and texts get 200 or a 4xx JSON error, never a 5xx."""
    params: dict[str, Any] = {} if q is None else {"q": q}
    segment = quote(email, safe="")
    for response in (
        service.client.post(f"/send-notification/{segment}"),
        service.client.post(f"/advanced-notification/{segment}", params=params),
        service.client.post("/send-sms", params={"phone": phone, "msg": msg}),
        service.client.post("/send-sms", params={"phone": "+8613812345678", "msg": msg}),
    ):
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/json"


def test_accepted_records_are_one_line_each(service: ServiceProcess) -> None:
    """Every accepted sms record (any text) is one line in sms_log.txt."""
    texts = ["a\nb", "\r", "\u2028x\u2029", "\x00\x1b[31m", "\\n", "é" * 50, " ", "\x85"]
    wait_until(lambda: idle(service))  # the previous test's tasks are all done
    before = accepted_lines(service, "sms_log.txt")
    ids = []
    for text in texts:
        response = service.client.post("/send-sms", params={"phone": "+15551234567", "msg": text})
        assert response.status_code == 200
        ids += response.json()["task_ids"]
    for task_id in ids:
        wait_until(
            lambda t=task_id: service.client.get(f"/tasks/{t}").json()["state"] == "succeeded"
        )
    assert accepted_lines(service, "sms_log.txt") == before + len(texts)
