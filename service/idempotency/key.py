"""The ``Idempotency-Key`` header's value: 1 to 255 printable ASCII characters, bare or as a
structured-field string, as the IETF draft writes it."""

MAX_KEY_LENGTH = 255


def parse_key(values: list[bytes]) -> str | None:
    """The key of the header's values: one value, 1 to 255 printable ASCII characters, bare or
    as a structured-field string (``"..."``, as the draft writes it); None if malformed."""
    if len(values) != 1:
        return None
    raw = values[0]
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        inner, key = raw[1:-1], bytearray()
        escaped = False
        for byte in inner:
            if escaped:
                if byte not in b'"\\':
                    return None
                key.append(byte)
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # an unescaped quote inside
                return None
            else:
                key.append(byte)
        if escaped:
            return None
        raw = bytes(key)
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or any(not 0x20 <= byte <= 0x7E for byte in raw):
        return None
    return raw.decode("ascii")
