"""Request field types: e-mail addresses, E.164 phone numbers, message text and e-mail
subjects, validated with compiled patterns (no per-request library machinery: they are on every
request's path)."""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema

# The HTML living standard's "valid e-mail address" (what browsers accept in <input
# type=email>), with a dotted domain and the RFC 5321 length limits on top.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"([A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}})@({_LABEL}(?:\.{_LABEL})+)")
EMAIL_MAX_LENGTH = 254
E164 = re.compile(r"\+[1-9]\d{6,14}")
E164_SCHEMA_PATTERN = rf"^{E164.pattern}$"  # JSON Schema patterns are not anchored
SUBJECT_MAX_LENGTH = 200
# What no e-mail header may hold: C0 and C1 controls (CR and LF above all: header injection),
# DEL, and the Unicode line and paragraph separators.
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SUBJECT_SCHEMA_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"
# What no message can carry whatever the channel: NUL (forbidden in mail, cut by C APIs) and
# lone surrogates (JSON's "\\ud800" escapes: not encodable as UTF-8). The file sinks escape
# everything else.
_UNDELIVERABLE = re.compile("[\x00\ud800-\udfff]")


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


def _deliverable(value: str) -> str:
    if _UNDELIVERABLE.search(value):
        raise ValueError(
            "text must not contain NUL characters or lone UTF-16 surrogates (\\u0000, "
            "\\ud800-\\udfff): they can't be delivered"
        )
    return value


def _header_safe(value: str) -> str:
    if _HEADER_UNSAFE.search(value):
        raise ValueError(
            "subject must be one line: no line breaks (CR, LF, U+2028, U+2029) or other control "
            "characters"
        )
    return value


Email = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX_LENGTH}),
]
# JSON's phone numbers: E.164 as sent
E164Phone = Annotated[
    str,
    AfterValidator(_e164),
    WithJsonSchema({"type": "string", "pattern": E164_SCHEMA_PATTERN, "example": "+8613812345678"}),
]
# a query string's: the same, with a ``+`` that URL decoding turned into a space taken back
Phone = Annotated[E164Phone, BeforeValidator(_plus_decoded_as_space)]
Subject = Annotated[
    str,
    StringConstraints(max_length=SUBJECT_MAX_LENGTH),
    AfterValidator(_header_safe),
    WithJsonSchema(
        {"type": "string", "maxLength": SUBJECT_MAX_LENGTH, "pattern": SUBJECT_SCHEMA_PATTERN}
    ),
]

# A message's text: anything deliverable (its length limit is the settings', added where used)
DeliverableText = Annotated[str, AfterValidator(_deliverable)]
