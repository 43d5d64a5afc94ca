"""``GET /metrics``: Prometheus text by default, OpenMetrics (with exemplars) when asked;
optionally behind a bearer token, or served on a port of its own instead of the API's.

Both write the text with ``observability.metrics.encoder`` (prometheus-client's output, for a
fraction of its cost). The port of its own (and the Celery worker's) gzips the text when the
scraper accepts it, as prometheus-client's server does, but at the fastest level (a tenth of
the default level's CPU, for a body about 15% larger)."""

import gzip
import hmac
import threading
from collections.abc import Iterable
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, gzip_accepted

from observability.metrics.encoder import choose

GZIP_LEVEL = 1


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
    encoder, content_type = choose(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)


def metrics_app(registry: CollectorRegistry) -> WSGIApplication:
    """prometheus-client's WSGI app (``make_wsgi_app``: any path, gzip when accepted), a scrape
    written by our encoder; other methods and ``name[]`` filters are left to the library's."""
    library = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        plain = environ["REQUEST_METHOD"] == "GET" and environ.get("PATH_INFO") != "/favicon.ico"
        if not plain or "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
            return library(environ, start_response)  # type: ignore[no-any-return]
        encoder, content_type = choose(environ.get("HTTP_ACCEPT", ""))
        body = encoder(registry)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per scrape on stderr."""


def serve_metrics(port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``registry`` on ``port`` of every interface, in a thread; shut it down when done."""
    server = make_server("0.0.0.0", port, metrics_app(registry), ThreadingWSGIServer, _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
