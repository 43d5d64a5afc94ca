"""Masking of e-mail addresses and phone numbers."""

import pytest

from observability.logs.redaction import mask, mask_address, mask_value, redact


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("user@example.com", "u***@example.com"),
        ("to alice.b+x@mail.example.org now", "to a***@mail.example.org now"),
        (
            "POST /send-notification/user%40example.com HTTP/1.1",
            "POST /send-notification/u***%40example.com HTTP/1.1",
        ),
        ("+8613812345678", "+86*******5678"),
        ("phone=%2B8613812345678&msg=hi", "phone=%2B86*******5678&msg=hi"),
        ("+15551234567:hello", "+15*****4567:hello"),
        ("no personal data 12345", "no personal data 12345"),
        ("celery@vm ready.", "celery@vm ready."),
        ("worker1@host-2 and user@example.com", "worker1@host-2 and u***@example.com"),
        ("celery%40vm user%40mail.example.org.", "celery%40vm u***%40mail.example.org."),
    ],
)
def test_mask(text: str, masked: str) -> None:
    """E-mails keep their first character and domain; phones their first two and last four;
    node names (a domain without a dot) are not e-mail addresses."""
    assert mask(text) == masked


def test_mask_value_recurses_into_containers() -> None:
    """Strings inside dicts, lists and tuples are masked; other values untouched."""
    value = {"a": ["x@y.io", ("+8613812345678", 3)], "b": 1.5}
    assert mask_value(value) == {"a": ["x***@y.io", ("+86*******5678", 3)], "b": 1.5}


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "GET /send-sms?phone=%2B8613812345678&msg=hi HTTP/1.1",
            "GET /send-sms?phone=***&msg=*** HTTP/1.1",
        ),
        ("url=/send-sms?msg=it's a secret", "url=/send-sms?msg=*** a secret"),
        ('request "/x?msg=1" done', 'request "/x?msg=***" done'),
        ("/a?q=b#frag", "/a?q=***#frag"),
    ],
)
def test_redact_query_values(text: str, redacted: str) -> None:
    """Every query value is replaced, an apostrophe in a value included (it is not the end of
    the query); a double quote, blank or fragment ends it."""
    assert redact(text) == redacted


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("203.0.113.42", "203.0.113.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("::ffff:10.1.2.3", "10.1.2.0"),
        ("testclient", "testclient"),
    ],
)
def test_mask_address(address: str, masked: str) -> None:
    """A client address keeps its network (/24, IPv6 /48) and loses its host part; a name that
    is not an address stays."""
    assert mask_address(address) == masked
