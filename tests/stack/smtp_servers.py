"""Handlers of the live stack's SMTP servers (aiosmtpd, ``python -m aiosmtpd -c ...``).

The accepting server is aiosmtpd's own ``Debugging`` handler (it prints every message it takes);
``Busy`` is a real SMTP server that answers every recipient "try again later" (451), which the
service classifies as a transient ``ServerBusy`` error and retries.
"""

from typing import Any

BUSY_REPLY = "451 4.3.2 Not accepting messages now, try again later"


class Busy:
    """Refuses every recipient with a transient 4xx reply."""

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        return BUSY_REPLY
