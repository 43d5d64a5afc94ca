"""Masking of e-mail addresses and phone numbers in free text (logs, span attributes), and
redaction of URL query values (which carry message text)."""

import ipaddress
import re
from collections.abc import Callable
from typing import Any

# The domain needs a dot: ``celery@vm`` or ``worker1@host-2`` is a Celery node name, not an
# address (and the API refuses dotless domains as e-mail addresses).
_EMAIL = re.compile(
    r"([A-Za-z0-9!#$%'*+^_`{|}~.-])[A-Za-z0-9!#$%'*+^_`{|}~.-]*(@|%40)"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(\+|%2B)(\d{2})(\d{1,9})(\d{4})(?!\d)", re.IGNORECASE)
# A query ends at a blank, a double quote or a fragment; not at an apostrophe, which clients
# leave unencoded inside values (``msg=it's``): ending there would leave the rest in clear.
_QUERY = re.compile(r"\?[^\s\"#]*")
_QUERY_ITEM = re.compile(r"([^&;=]*)(=?)[^&;]*")
REDACTED = "***"


def _mask_phone(match: re.Match[str]) -> str:
    plus, head, middle, tail = match.groups()
    return f"{plus}{head}{'*' * len(middle)}{tail}"


def mask(text: str) -> str:
    """``user@example.com`` -> ``u***@example.com``, ``+8613812345678`` -> ``+86*******5678``;
    node names such as ``celery@vm`` stay as they are."""
    if "@" not in text and "+" not in text and "%" not in text:
        return text
    text = _EMAIL.sub(r"\1***\2\3", text)
    return _PHONE.sub(_mask_phone, text)


def _map_strings(value: Any, apply: Callable[[str], str]) -> Any:
    """``apply`` to strings, and to strings inside lists, tuples and dicts; other values as they
    are."""
    if isinstance(value, str):
        return apply(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, apply) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map_strings(item, apply) for item in value)
    return value


def mask_value(value: Any) -> Any:
    """``mask`` strings, and strings inside lists, tuples and dicts."""
    return _map_strings(value, mask)


def _redact_item(match: re.Match[str]) -> str:
    if not match.group():
        return ""
    key, equals = match.group(1), match.group(2)
    return f"{key}={REDACTED}" if equals else REDACTED


def _redact_query(match: re.Match[str]) -> str:
    return "?" + redact_query_string(match.group()[1:])


def redact(text: str) -> str:
    """``mask``, and every value of a URL query string replaced by ``***``:
    ``/send-sms?phone=%2B86...&msg=hello`` -> ``/send-sms?phone=***&msg=***``."""
    text = mask(text)
    return _QUERY.sub(_redact_query, text) if "?" in text else text


def redact_query_string(query: str) -> str:
    """A bare query string (no ``?``) with every value (or valueless item) replaced by ``***``."""
    return _QUERY_ITEM.sub(_redact_item, query)


def mask_address(address: str) -> str:
    """A client's IP address with its host part zeroed, as analytics tools anonymise them:
    ``203.0.113.42`` -> ``203.0.113.0`` (/24), an IPv6 address to its /48; a name as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def redact_value(value: Any) -> Any:
    """``redact`` strings, and strings inside lists, tuples and dicts."""
    return _map_strings(value, redact)
