"""Masking of e-mail addresses and phone numbers in free text (logs, span attributes)."""

import re
from typing import Any

_EMAIL = re.compile(
    r"([A-Za-z0-9!#$%'*+^_`{|}~.-])[A-Za-z0-9!#$%'*+^_`{|}~.-]*(@|%40)"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(\+|%2B)(\d{2})(\d{1,9})(\d{4})(?!\d)", re.IGNORECASE)


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
