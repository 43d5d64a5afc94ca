"""The apps under test of the throughput part (and the memory part), by name.

Every app is served the same way (``bench/server.py``); what tells them apart is the uvicorn
target and the environment:

* ``tutorial``: the tutorial app (``bench/tutorial_app.py``, FastAPI ``BackgroundTasks``),
  uninstrumented: the baseline every ratio is taken against;
* ``ours-sampled-10`` / ``ours-sampled-100``: the service (``--factory
  service.main:create_app``) with everything on: HTTP and task metrics, JSON logs on stdout
  written to a file, spans sampled at 10% (``parentbased_traceidratio`` 0.1) or 100%
  (``parentbased_always_on``) and exported over OTLP/HTTP (batch processor) to a local receiver
  (``bench/otlp_sink.py``, one per server, a separate cheap process);
* ``tutorial-instrumented``: reference, the tutorial app with the usual FastAPI stack
  (prometheus-fastapi-instrumentator + opentelemetry-instrumentation-fastapi, no exporter);
* not run by default (``--apps``), to see where the cost goes: ``ours-noexport``,
  ``ours-notrace``, ``ours-nologs``, ``ours-nofreeze``.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLED_10 = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
SAMPLED_100 = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
OURS = {"NOTIFY_LOG_FORMAT": "json"}


@dataclass(frozen=True)
class AppSpec:
    name: str
    target: str
    factory: bool
    env: dict[str, str]
    stdout: str  # "file" or "devnull"
    otlp: bool  # export spans to a local OTLP receiver of its own
    about: str


APPS = {
    spec.name: spec
    for spec in (
        AppSpec(
            "tutorial",
            "bench.tutorial_app:app",
            False,
            {},
            "file",
            False,
            "the tutorial app, uninstrumented (baseline)",
        ),
        AppSpec(
            "ours-sampled-10",
            "service.main:create_app",
            True,
            OURS | SAMPLED_10,
            "file",
            True,
            "the service, everything on, spans sampled 10% exported over OTLP/HTTP, "
            "JSON logs to a file",
        ),
        AppSpec(
            "ours-sampled-100",
            "service.main:create_app",
            True,
            OURS | SAMPLED_100,
            "file",
            True,
            "the same, spans sampled 100%",
        ),
        AppSpec(
            "tutorial-instrumented",
            "bench.tutorial_app:app",
            False,
            {"NOTIFY_BENCH_INSTRUMENTED": "1"},
            "file",
            False,
            "reference: the tutorial app with prometheus-fastapi-instrumentator and "
            "opentelemetry-instrumentation-fastapi (request spans, no exporter); tasks unobserved",
        ),
        # not run by default (--apps): where the cost goes
        AppSpec(
            "ours-noexport",
            "service.main:create_app",
            True,
            OURS | SAMPLED_100,
            "file",
            False,
            "the service, spans sampled 100% but not exported",
        ),
        AppSpec(
            "ours-notrace",
            "service.main:create_app",
            True,
            OURS | {"OTEL_SDK_DISABLED": "true"},
            "file",
            False,
            "the service with OTEL_SDK_DISABLED=true (no spans)",
        ),
        AppSpec(
            "ours-nologs",
            "service.main:create_app",
            True,
            OURS | SAMPLED_10 | {"NOTIFY_LOG_LEVEL": "WARNING"},
            "devnull",
            True,
            "the service sampled 10%, exported, INFO logs off",
        ),
        AppSpec(
            "ours-nofreeze",
            "service.main:create_app",
            True,
            OURS | SAMPLED_100 | {"NOTIFY_GC_FREEZE": "false"},
            "file",
            True,
            "ours-sampled-100 without gc.freeze after start-up (NOTIFY_GC_FREEZE=false)",
        ),
    )
}
DEFAULT_APPS = ("tutorial", "ours-sampled-10", "ours-sampled-100", "tutorial-instrumented")
BASELINE = "tutorial"
