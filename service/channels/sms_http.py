"""SMS through an HTTP provider (httpx): ``POST`` JSON ``{"to", "text"}`` to
``NOTIFY_SMS_HTTP_URL`` with ``Authorization: Bearer <token>`` and ``Idempotency-Key: <task
id>`` (a provider that honours it never sends one task's SMS twice). One client with a
connection pool per process; each message is one observed delivery attempt."""

import email.utils
import os
import threading
import time

import httpx
from opentelemetry.util.types import AttributeValue

from observability import delivery
from service.channels.errors import (
    ConnectionFailed,
    DeliveryRejected,
    DeliveryTimedOut,
    ServerBusy,
)

CHANNEL = "http"
RETRIED_STATUSES = frozenset({408, 425, 429})


class HttpSmsChannel:
    def __init__(self, url: str, *, token: str, timeout: float, pool_size: int = 10) -> None:
        self.url = httpx.URL(url)
        if token:  # the bearer token, not credentials in the URL, authorises the request
            self.url = self.url.copy_with(userinfo=b"")
        self.timeout = timeout
        self.pool_size = pool_size
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # what spans say of the provider: never its query string or credentials
        self._attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "server.address": self.url.host,
            "server.port": self.url.port or (443 if self.url.scheme == "https" else 80),
            "url.full": str(self.url.copy_with(query=None, userinfo=b"")),
        }

    def send(self, task_id: str, to: str, text: str) -> None:
        """Deliver one SMS, as one attempt; raises a ``service.channels.errors`` class."""
        with delivery.attempt(CHANNEL, "POST", self._attributes) as attempt:
            try:
                response = self._http().post(
                    self.url, json={"to": to, "text": text}, headers={"Idempotency-Key": task_id}
                )
            except httpx.TimeoutException:
                raise DeliveryTimedOut(f"no answer within {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"SMS provider unreachable ({type(exc).__name__})") from None
            status = attempt.status = response.status_code
            attempt.span.set_attribute("http.response.status_code", status)
            if status < 300:
                return
            if status in RETRIED_STATUSES or status >= 500:
                retry_after = _retry_after(response.headers.get("retry-after"))
                raise ServerBusy(f"SMS provider answered {status}", retry_after=retry_after)
            raise DeliveryRejected(f"SMS provider refused the message ({status})")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        """This process's client (a new one after a fork: a pool's sockets are not shared)."""
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                limits = httpx.Limits(
                    max_connections=self.pool_size, max_keepalive_connections=self.pool_size
                )
                self._client = httpx.Client(
                    headers=self._headers, timeout=self.timeout, limits=limits
                )
                self._pid = os.getpid()
            return self._client


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
