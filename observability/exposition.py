"""``GET /metrics``: Prometheus text by default, OpenMetrics (with exemplars) when asked."""

from fastapi import Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def metrics_response(request: Request, registry: CollectorRegistry) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)
