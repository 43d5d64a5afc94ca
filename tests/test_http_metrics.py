"""HTTP server metrics of a real uvicorn process: labelled by route template, probes excluded,
unknown methods folded into ``_OTHER``."""

from typing import Any

from tests.support.metrics import sample_value

EMAIL = "alice.secret@example.com"


def test_http_metrics_use_route_template_and_exclude_probes(start_service: Any) -> None:
    """HTTP metrics label the route template (never the raw path) and skip probe paths."""
    service = start_service()
    service.client.post(f"/send-notification/{EMAIL}")
    service.client.post("/send-notification/bad")
    service.client.get("/nope/abc")
    service.client.get("/healthz")
    text = service.metrics()
    labels = {"method": "POST", "route": "/send-notification/{email}"}
    assert (
        sample_value(
            text, "http_server_request_duration_seconds_count", status_code="200", **labels
        )
        == 1
    )
    assert (
        sample_value(
            text, "http_server_request_duration_seconds_count", status_code="422", **labels
        )
        == 1
    )
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="<unmatched>",
            status_code="404",
        )
        == 1
    )
    assert 'route="/healthz"' not in text
    assert sample_value(text, "http_server_active_requests", method="POST") == 0


def test_unknown_http_methods_share_one_label(start_service: Any) -> None:
    """Arbitrary request methods can't mint new series: they are labelled _OTHER."""
    service = start_service()
    for method in ("PURGE", "MKCOL", "PROPFIND"):  # methods both h11 and httptools pass on
        assert service.client.request(method, "/safe-notify").status_code == 405
    text = service.metrics()
    assert 'method="PURGE"' not in text and 'method="MKCOL"' not in text
    assert (
        sample_value(
            text,
            "http_server_request_duration_seconds_count",
            method="_OTHER",
            route="/safe-notify",
            status_code="405",
        )
        == 3
    )
