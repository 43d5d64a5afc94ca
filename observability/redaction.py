"""Masking of e-mail addresses and phone numbers in free text (logs, span attributes), and
redaction of URL query values (which carry message text)."""

import re
from typing import Any

_EMAIL = re.compile(
    r"([A-Za-z0-9!#$%'*+^_`{|}~.-])[A-Za-z0-9!#$%'*+^_`{|}~.-]*(@|%40)"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(\+|%2B)(\d{2})(\d{1,9})(\d{4})(?!\d)", re.IGNORECASE)
_QUERY = re.compile(r"\?[^\s\"'#]*")
_QUERY_ITEM = re.compile(r"([^&;=]*)(=?)[^&;]*")
REDACTED = "***"


def _mask_phone(match: re.Match[str]) -> str:
    plus, head, middle, tail = match.groups()
    return f"{plus}{head}{'*' * len(middle)}{tail}"


def mask(text: str) -> str:
    """``user@example.com`` -> ``u***@example.com``, ``+8613812345678`` -> ``+86*******5678``."""
    if "@" not in text and "+" not in text and "%" not in text:
        return text
    text = _EMAIL.sub(r"\1***\2\3", text)
    return _PHONE.sub(_mask_phone, text)


def mask_value(value: Any) -> Any:
    """Mask strings, and strings inside lists, tuples and dicts; leave other values alone."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(item) for item in value)
    return value


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


def redact_value(value: Any) -> Any:
    """``redact`` strings, and strings inside lists, tuples and dicts."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value
