"""What an idempotency store keeps of a key: the request's fingerprint, the reservation's
token and, once answered, the response (as JSON in Redis)."""

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope


class StoreUnavailable(Exception):
    """The store could not be reached or answered in error."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a request: its method, and digests of its path, query and body."""

    method: str
    path: str
    query: str
    body: str

    _PARTS = (("method", "method"), ("path", "path"), ("query", "query string"), ("body", "body"))

    @classmethod
    def of(cls, scope: Scope, body: bytes) -> "Fingerprint":
        return cls(
            scope["method"],
            digest(scope["path"].encode("utf-8", "surrogatepass")),
            digest(scope.get("query_string", b"")),
            digest(body),
        )

    def differences(self, other: "Fingerprint") -> list[str]:
        """The names of the parts in which ``other`` differs."""
        return [name for attr, name in self._PARTS if getattr(self, attr) != getattr(other, attr)]


@dataclass(frozen=True)
class StoredResponse:
    """A kept answer: status, the headers a replay repeats, body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class Entry:
    """What a store holds for a key: the request's fingerprint, the token of the reservation
    that made it, and the answer (None while the request is in flight)."""

    fingerprint: Fingerprint
    token: str
    response: StoredResponse | None = None

    @classmethod
    def reservation(cls, fingerprint: Fingerprint) -> "Entry":
        return cls(fingerprint, secrets.token_hex(16))

    def to_json(self) -> bytes:
        response = self.response
        value: dict[str, Any] = {
            "fingerprint": [
                self.fingerprint.method,
                self.fingerprint.path,
                self.fingerprint.query,
                self.fingerprint.body,
            ],
            "token": self.token,
            "response": None
            if response is None
            else {
                "status": response.status,
                "headers": [[_b64(k), _b64(v)] for k, v in response.headers],
                "body": _b64(response.body),
            },
        }
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "Entry":
        value = json.loads(data)
        kept = value["response"]
        response = (
            None
            if kept is None
            else StoredResponse(
                int(kept["status"]),
                tuple((_unb64(k), _unb64(v)) for k, v in kept["headers"]),
                _unb64(kept["body"]),
            )
        )
        return cls(Fingerprint(*value["fingerprint"]), value["token"], response)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
