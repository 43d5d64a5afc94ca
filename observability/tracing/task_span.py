"""The span of a task run: named ``background_task {name}`` (a Celery worker's: the messaging
conventions' CONSUMER ``process {queue}``, with their ``messaging.*`` attributes), started and
ended at the run's own start and end, with the contract's ``background_task.*`` attributes and,
on a run that did not succeed, status ERROR, ``error.type`` and the masked exception."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, TracerProvider
from opentelemetry.util.types import AttributeValue

from observability import names
from observability.tasks.envelope import TaskEnvelope
from observability.tracing import scope
from observability.tracing.destination import Destination
from observability.tracing.exceptions import mark_failed
from observability.tracing.stand_in import unsampled_child


class TaskSpans:
    """Spans of the runs of one backend. ``link_parent``: each run is the root of a trace of its
    own that links to the enqueuing context, instead of its child. ``consumes``: the queue the
    runs' messages come from (a Celery worker's), whose ``process`` span each run is."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        backend: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        link_parent: bool = False,
        consumes: Destination | None = None,
    ) -> None:
        self.tracer = scope.tracer(tracer_provider, "observability.runner")
        self.process = None if consumes is None else consumes.process
        self.backend = backend
        self.kind = kind
        self.link_parent = link_parent
        self._unsampled_child = unsampled_child(tracer_provider)

    def start(
        self, envelope: TaskEnvelope, parent: Context | None, started_at: float, queue_wait: float
    ) -> Span:
        """A child of ``parent``, else of the context the envelope carries."""
        if parent is None:
            parent = propagate.extract(envelope.trace_context)
        if self._unsampled_child is not None and not self.link_parent:
            stand_in = self._unsampled_child(trace.get_current_span(parent).get_span_context())
            if stand_in is not None:
                return stand_in
        links: list[Link] = []
        if self.link_parent:
            linked = trace.get_current_span(parent).get_span_context()
            parent, links = Context(), [Link(linked)] if linked.is_valid else []
        attributes: dict[str, AttributeValue] = {
            names.ATTR_TASK_NAME: envelope.name,
            names.ATTR_TASK_ID: envelope.id,
            names.ATTR_TASK_BACKEND: self.backend,
            names.ATTR_TASK_QUEUE_WAIT: queue_wait,
        }
        if self.process is None:
            name = f"{names.TASK_SPAN_PREFIX} {envelope.name}"
        else:
            name = self.process.span_name
            attributes.update(self.process.attributes)
            attributes[names.ATTR_MESSAGING_MESSAGE_ID] = envelope.id
        return self.tracer.start_span(
            name,
            context=parent,
            kind=self.kind,
            links=links,
            start_time=int(started_at * 1e9),
            attributes=attributes,
        )

    @contextmanager
    def publish(
        self, envelope: TaskEnvelope, destination: Destination, mask: Callable[[str], str]
    ) -> Iterator[Span]:
        """The current span while ``envelope`` is sent to a broker's queue: PRODUCER
        ``publish {queue}``, a child of the context the envelope carries (the request's); if
        sending raises, ERROR with ``error.type`` and the masked exception."""
        publish = destination.publish
        with self.tracer.start_as_current_span(
            publish.span_name,
            context=propagate.extract(envelope.trace_context),
            kind=SpanKind.PRODUCER,
            attributes={
                **publish.attributes,
                names.ATTR_MESSAGING_MESSAGE_ID: envelope.id,
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.backend,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                mark_failed(span, type(exc).__name__, str(exc), exc, mask)
                raise

    @staticmethod
    def end(
        span: Span,
        outcome: str,
        finished_at: float,
        failure: tuple[str, str, BaseException | None] | None,
        mask: Callable[[str], str],
    ) -> None:
        """``failure``: (error type, message, exception if any) of a run that did not succeed."""
        span.set_attribute(names.ATTR_TASK_OUTCOME, outcome)
        if failure is not None:
            mark_failed(span, *failure, mask)
        span.end(end_time=int(finished_at * 1e9))
