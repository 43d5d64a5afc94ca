"""``service.limits.RequestLimitsMiddleware`` on a tiny inline app: URL, header and body limits
answer 414, 431 and 413 with a JSON body naming the limit; requests within them pass intact."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.types import Message

from service.limits import RequestLimits, RequestLimitsMiddleware

LIMITS = RequestLimits(max_url_bytes=100, max_header_bytes=1000, max_body_bytes=64)


def limited_app() -> tuple[FastAPI, list[bytes]]:
    """An echo app with the limits added as the service adds them (inside Starlette's error
    middleware), and the bodies the endpoints received."""
    app = FastAPI()
    seen: list[bytes] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        seen.append(body)
        return {"length": len(body), "body": body.decode()}

    @app.get("/{path:path}")
    async def anything(path: str) -> dict[str, str]:
        return {"path": path}

    app.add_middleware(RequestLimitsMiddleware, limits=LIMITS)
    return app, seen


def call(
    app: Any, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await request(client)

    return asyncio.run(main())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length (sent chunked)."""
    for part in parts:
        yield part


def test_over_long_url_is_414() -> None:
    """A path and query string over max_url_bytes get 414 with the URL limit in the body."""
    app, _ = limited_app()
    response = call(app, lambda c: c.get("/" + "a" * 60, params={"q": "b" * 60}))
    assert response.status_code == 414
    assert response.json() == {
        "detail": "request URL (path and query string) too long",
        "limit_bytes": 100,
    }
    assert call(app, lambda c: c.get("/" + "a" * 60)).status_code == 200  # path alone fits


def test_headers_over_the_limit_are_431() -> None:
    """A header block over max_header_bytes gets 431 with the header limit in the body."""
    app, _ = limited_app()
    response = call(app, lambda c: c.get("/ok", headers={"x-big": "v" * 1000}))
    assert response.status_code == 431
    assert response.json() == {"detail": "request header fields too large", "limit_bytes": 1000}
    assert call(app, lambda c: c.get("/ok", headers={"x-small": "v" * 100})).status_code == 200


def test_declared_body_over_the_limit_is_413_before_the_app() -> None:
    """A Content-Length over max_body_bytes gets 413 naming the limit; the app never runs."""
    app, seen = limited_app()
    response = call(app, lambda c: c.post("/echo", content=b"x" * 65))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "request body too large", "limit_bytes": 64}
    assert seen == []


def test_chunked_body_over_the_limit_is_413() -> None:
    """A body without Content-Length is read up to the limit and refused with 413 past it."""
    app, seen = limited_app()
    response = call(app, lambda c: c.post("/echo", content=chunks(b"x" * 40, b"y" * 40)))
    assert response.status_code == 413
    assert response.json() == {"detail": "request body too large", "limit_bytes": 64}
    assert seen == []


def test_body_under_the_limit_passes_through_intact() -> None:
    """Bodies within the limit, declared or chunked, reach the app byte for byte."""
    app, seen = limited_app()
    body = b"hello \xc3\xa9 " + b"z" * 40
    declared = call(app, lambda c: c.post("/echo", content=body))
    chunked = call(app, lambda c: c.post("/echo", content=chunks(body[:10], body[10:])))
    limit = call(app, lambda c: c.post("/echo", content=b"x" * 64))  # exactly at the limit
    for response, expected in ((declared, body), (chunked, body), (limit, b"x" * 64)):
        assert response.status_code == 200
        assert response.json() == {"length": len(expected), "body": expected.decode()}
    assert seen == [body, body, b"x" * 64]


def test_body_longer_than_declared_is_413_as_the_app_reads_it() -> None:
    """A body that grows past the limit while the app reads it (its Content-Length understated)
    is still answered 413 naming the limit."""
    app, seen = limited_app()
    messages: list[Message] = [
        {"type": "http.request", "body": b"x" * 40, "more_body": True},
        {"type": "http.request", "body": b"y" * 40, "more_body": False},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-length", b"10")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": "request body too large", "limit_bytes": 64}
    assert seen == []
