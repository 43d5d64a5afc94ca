"""The e-mail a task sends: headers, Message-ID from the task id, encodings that survive any
text, and no header injection."""

from email import message_from_bytes, policy

import pytest

from service.channels.smtp import SmtpChannel

CHANNEL = SmtpChannel("localhost", 25, security="none", sender="notify@example.org", timeout=1)


def parsed(data: bytes) -> dict[str, str]:
    message = message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)
    fields = {name: str(value) for name, value in message.items()}
    return fields | {"body": message.get_content()}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("to", "subject", "text"),
    [
        ("user@example.com", "Notification", "message to user@example.com"),
        ("user@example.com", "Notification", "héllo, 你好\nsecond line"),
        ("user@example.com", "Grüße aus Köln", "hello"),
        ("用户@example.com", "Notification", "message to 用户@example.com"),
    ],
)
def test_message_reads_back_as_written(to: str, subject: str, text: str) -> None:
    """From, To, Subject, Message-ID <task id@sender domain> and the body read back intact."""
    outgoing = CHANNEL.message("0123abcd", to, subject, text)
    fields = parsed(outgoing.data)
    assert fields["From"] == "notify@example.org" and fields["To"] == to
    assert fields["Subject"] == subject
    assert fields["Message-ID"] == "<0123abcd@example.org>"
    assert fields["body"].rstrip("\n") == text
    assert outgoing.smtputf8 is (not to.isascii())


def test_ascii_headers_stay_seven_bit_unless_the_address_needs_smtputf8() -> None:
    """Only an internationalised address makes the message need SMTPUTF8."""
    assert CHANNEL.message("a", "u@example.com", "Grüße", "héllo").data.isascii()
    assert not CHANNEL.message("a", "用户@example.com", "s", "t").data.isascii()


@pytest.mark.parametrize("subject", ["a\r\nBcc: victim@example.com", "a\nb", "a\rb"])
def test_line_breaks_in_a_header_are_refused(subject: str) -> None:
    """A subject carrying a line break can't inject a header: the message is not built."""
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        CHANNEL.message("a", "u@example.com", subject, "text")
