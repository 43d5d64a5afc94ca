"""The span codec of the export helper: a batch of SDK spans as plain values (str, int, float,
bool, None, and tuples, lists and dicts of those, in named tuples of this module), cheap to
pickle, and the same spans rebuilt on the other side. Resources and scopes travel once per
batch (per chunk, as the exporter hands batches over); rebuilt, equal resources are one object."""

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util.types import Attributes

PlainContext = tuple[int, int, int, tuple[tuple[str, str], ...], bool]


class FlatSpan(NamedTuple):
    resource: int  # index into Batch.resources
    scope: int  # index into Batch.scopes
    name: str
    context: PlainContext | None
    parent: PlainContext | None
    kind: int
    start_time: int | None
    end_time: int | None
    status_code: int
    status_description: str | None
    attributes: dict[str, Any]
    dropped_attributes: int
    events: list[tuple[str, int, dict[str, Any]]]
    dropped_events: int
    links: list[tuple[PlainContext, dict[str, Any]]]
    dropped_links: int


class Batch(NamedTuple):
    resources: list[tuple[dict[str, Any], str | None]]
    scopes: list[tuple[str, str | None, str | None] | None]
    spans: list[FlatSpan]


def _plain(attributes: Attributes) -> dict[str, Any]:
    """A dict of the attributes: the mapping's own ``copy`` (a C dict copy; a span's
    ``attributes`` is a read-only proxy whose ``copy`` is its ``BoundedAttributes``'), not an
    item-by-item copy through Python-level ``__getitem__``."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    if copy is not None:
        plain = copy()
        if type(plain) is dict:
            return plain
    return dict(attributes)


def _context(context: SpanContext) -> PlainContext:
    state = tuple(context.trace_state.items()) if context.trace_state else ()
    return (context.trace_id, context.span_id, int(context.trace_flags), state, context.is_remote)


def flatten(spans: Sequence[ReadableSpan]) -> Batch:
    """(resources, scopes, spans) of a batch, resources and scopes listed once each."""
    resources: dict[int, int] = {}
    scopes: dict[int, int] = {}
    resource_list: list[tuple[dict[str, Any], str | None]] = []
    scope_list: list[tuple[str, str | None, str | None] | None] = []
    flat: list[FlatSpan] = []
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        r = resources.get(id(resource))
        if r is None:
            r = resources[id(resource)] = len(resource_list)
            resource_list.append((_plain(resource.attributes), resource.schema_url))
        s = scopes.get(id(scope))
        if s is None:
            s = scopes[id(scope)] = len(scope_list)
            scope_list.append(
                None if scope is None else (scope.name, scope.version, scope.schema_url)
            )
        context, parent, status = span.context, span.parent, span.status
        flat.append(
            FlatSpan(
                r,
                s,
                span.name,
                None if context is None else _context(context),
                None if parent is None else _context(parent),
                span.kind.value,
                span.start_time,
                span.end_time,
                status.status_code.value,
                status.description,
                _plain(span.attributes),
                span.dropped_attributes,
                [(e.name, e.timestamp, _plain(e.attributes)) for e in span.events],
                span.dropped_events,
                [(_context(link.context), _plain(link.attributes)) for link in span.links],
                span.dropped_links,
            )
        )
    return Batch(resource_list, scope_list, flat)


def _span_context(values: PlainContext) -> SpanContext:
    trace_id, span_id, flags, state, remote = values
    trace_state = TraceState(list(state)) if state else DEFAULT_TRACE_STATE
    return SpanContext(trace_id, span_id, remote, TraceFlags(flags), trace_state)


class _Resource(Resource):
    """A rebuilt resource that works out its hash once: the SDK's is a JSON dump of the
    attributes, and the OTLP encoder hashes the resource of every span it groups."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


_rebuilt_resources: dict[Hashable, Resource] = {}
MAX_REBUILT_RESOURCES = 16  # a process has one or a few; a bound all the same


def _resource(attributes: dict[str, Any], schema_url: str | None) -> Resource:
    """One object per distinct resource, across batches and chunks: the encoder groups spans by
    resource, and two equal resources that are not the same object are compared attribute by
    attribute (through Python-level iteration) for every span."""
    try:
        key = (schema_url, tuple(attributes.items()))
        resource = _rebuilt_resources.get(key)
    except TypeError:  # an unhashable value: not shared
        return _Resource(attributes, schema_url)
    if resource is None:
        if len(_rebuilt_resources) >= MAX_REBUILT_RESOURCES:
            _rebuilt_resources.clear()
        resource = _rebuilt_resources[key] = _Resource(attributes, schema_url)
    return resource


def _bounded(attributes: dict[str, Any], dropped: int) -> Attributes:
    """The attributes as the span held them: a plain dict reads the same (the SDK counts no
    dropped ones in it), a ``BoundedAttributes`` (whose construction checks every value again)
    only to carry a dropped count."""
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=False, max_value_len=None)
    bounded.dropped = dropped
    return bounded


def _bounded_list(items: list[Any], dropped: int) -> Sequence[Any]:
    """The same for events and links: a ``BoundedList`` only to carry a dropped count."""
    if not dropped:
        return items
    bounded: BoundedList = BoundedList(None)  # type: ignore[type-arg]
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded


def rebuild(batch: Batch) -> list[ReadableSpan]:
    """The spans ``flatten`` made plain values of."""
    resources = [_resource(attributes, schema_url) for attributes, schema_url in batch.resources]
    scopes = [None if s is None else InstrumentationScope(*s) for s in batch.scopes]
    return [_span(flat, resources, scopes) for flat in batch.spans]


def _span(
    flat: FlatSpan, resources: list[Resource], scopes: list[InstrumentationScope | None]
) -> ReadableSpan:
    return ReadableSpan(
        name=flat.name,
        context=None if flat.context is None else _span_context(flat.context),
        parent=None if flat.parent is None else _span_context(flat.parent),
        resource=resources[flat.resource],
        attributes=_bounded(flat.attributes, flat.dropped_attributes),
        events=_bounded_list(
            [Event(event, attrs, time) for event, time, attrs in flat.events],
            flat.dropped_events,
        ),
        links=_bounded_list(
            [Link(_span_context(ctx), attributes) for ctx, attributes in flat.links],
            flat.dropped_links,
        ),
        kind=SpanKind(flat.kind),
        status=Status(StatusCode(flat.status_code), flat.status_description),
        start_time=flat.start_time,
        end_time=flat.end_time,
        instrumentation_scope=scopes[flat.scope],
    )
