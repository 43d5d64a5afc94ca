"""Request field types: e-mail addresses and E.164 phone numbers, validated with compiled
patterns (no per-request library machinery: they are on every request's path)."""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

# The HTML living standard's "valid e-mail address" (what browsers accept in <input
# type=email>), with a dotted domain and the RFC 5321 length limits on top.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"([A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}})@({_LABEL}(?:\.{_LABEL})+)")
EMAIL_MAX_LENGTH = 254
E164 = re.compile(r"\+[1-9]\d{6,14}")
E164_SCHEMA_PATTERN = rf"^{E164.pattern}$"  # JSON Schema patterns are not anchored


def _email(value: str) -> str:
    if len(value) > EMAIL_MAX_LENGTH or not _EMAIL.fullmatch(value):
        raise ValueError(
            "not a valid e-mail address: expected local-part@domain.tld in ASCII "
            f"(at most 64 characters before the @, {EMAIL_MAX_LENGTH} in all)"
        )
    return value


def _plus_decoded_as_space(value: Any) -> Any:
    """A literal ``+`` in a query string decodes to a space; take it back."""
    if isinstance(value, str) and value.startswith(" ") and value[1:2].isdigit():
        return "+" + value[1:]
    return value


def _e164(value: str) -> str:
    if not E164.fullmatch(value):
        raise ValueError(
            "phone must be in E.164 form: '+', country code and number, "
            "7 to 15 digits, e.g. +8613812345678 (encode '+' as %2B in URLs)"
        )
    return value


Email = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX_LENGTH}),
]
Phone = Annotated[
    str,
    BeforeValidator(_plus_decoded_as_space),
    AfterValidator(_e164),
    WithJsonSchema({"type": "string", "pattern": E164_SCHEMA_PATTERN, "example": "+8613812345678"}),
]
