"""Prometheus metrics: task and HTTP metrics created once per registry, the event-loop lag
monitor, the exposition of ``/metrics``, and prometheus-client's multiprocess mode with its
directory. ``directory`` imports only the standard library: a process claims its directory
before anything imports ``prometheus_client``."""
