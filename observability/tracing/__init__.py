"""Tracing: the tracer provider from ``OTEL_*`` settings, the accounting span processor, the
span codec and the export helper process, and the span helpers the recorder and the HTTP
middleware share."""
