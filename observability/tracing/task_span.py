"""The span of a task run: named ``background_task {name}``, started and ended at the run's
own start and end, with the contract's ``background_task.*`` attributes and, on a run that did
not succeed, status ERROR and the masked exception."""

from collections.abc import Callable
from contextlib import AbstractContextManager

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, TracerProvider

from observability import names
from observability.tasks.envelope import TaskEnvelope
from observability.tracing.exceptions import mark_failed
from observability.tracing.stand_in import unsampled_child


class TaskSpans:
    """Spans of the runs of one backend. ``link_parent``: each run is the root of a trace of its
    own that links to the enqueuing context, instead of its child."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        backend: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        link_parent: bool = False,
    ) -> None:
        self.tracer = tracer_provider.get_tracer("observability.runner")
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
        return self.tracer.start_span(
            f"{names.TASK_SPAN_PREFIX} {envelope.name}",
            context=parent,
            kind=self.kind,
            links=links,
            start_time=int(started_at * 1e9),
            attributes={
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.backend,
                names.ATTR_TASK_QUEUE_WAIT: queue_wait,
            },
        )

    def publish(self, envelope: TaskEnvelope, queue: str) -> AbstractContextManager[Span]:
        """The current span while ``envelope`` is sent to a Celery ``queue``: PRODUCER, a child
        of the context the envelope carries (the request's)."""
        return self.tracer.start_as_current_span(
            f"{names.PUBLISH_SPAN_PREFIX} {queue}",
            context=propagate.extract(envelope.trace_context),
            kind=SpanKind.PRODUCER,
            attributes={
                names.ATTR_TASK_NAME: envelope.name,
                names.ATTR_TASK_ID: envelope.id,
                names.ATTR_TASK_BACKEND: self.backend,
                names.ATTR_MESSAGING_SYSTEM: "celery",
                names.ATTR_MESSAGING_DESTINATION: queue,
            },
        )

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
