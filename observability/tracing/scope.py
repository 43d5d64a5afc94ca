"""The version of this package, as the instrumentation scope of its tracers and the default
``service.version`` of the resource: a tracing backend tells one release's spans from
another's."""

from importlib import metadata
from typing import Final

from opentelemetry.trace import Tracer, TracerProvider

DISTRIBUTION: Final = "observable-notify"


def _version() -> str | None:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # the sources used without being installed
        return None


VERSION: Final = _version()


def tracer(provider: TracerProvider, name: str) -> Tracer:
    """``provider``'s tracer for scope ``name``, at this package's version."""
    return provider.get_tracer(name, VERSION)
