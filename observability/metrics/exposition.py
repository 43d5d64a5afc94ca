"""``GET /metrics``: Prometheus text by default, OpenMetrics (with exemplars) when asked;
optionally behind a bearer token, or served on a port of its own instead of the API's."""

import hmac
from wsgiref.simple_server import WSGIServer

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder


def bearer_token_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


def metrics_response(request: Request, registry: CollectorRegistry, token: str = "") -> Response:
    """The registry's exposition; with a ``token``, 401 unless the request bears it."""
    if token and not bearer_token_matches(request.headers.get("authorization", ""), token):
        return JSONResponse(
            {"detail": "a valid bearer token is required for /metrics"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)


def serve_metrics(port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``registry`` on ``port`` of every interface, in a thread; shut it down when done."""
    server, _thread = start_http_server(port, registry=registry)
    return server
