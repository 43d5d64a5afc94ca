"""Delivery attempts observed: a task that sends something out (an e-mail over SMTP, an SMS
through an HTTP provider, a line to a file) wraps each attempt in ``attempt(channel, ...)``,
which makes it a CLIENT span (child of the task's span), counts it by channel and result,
times it, and adds the channel, attempt number and provider status to the run's terminal log
line. A failure's result follows the retry policy's classes: ``transient_error`` for an error
the backend retries (unless the task's retries are used up), ``permanent_error`` otherwise."""

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, TracerProvider
from opentelemetry.util.types import AttributeValue

from observability import names
from observability.logs.configuration import get_logger
from observability.logs.redaction import mask
from observability.tasks.retry import RetryPolicy
from observability.tasks.run import Run, current_run
from observability.tracing import ids, scope
from observability.tracing.exceptions import mark_failed
from observability.tracing.stand_in import unsampled_child

if TYPE_CHECKING:  # prometheus_client stays unimported until metrics are made (worker start-up)
    from observability.metrics.delivery import DeliveryMetrics


class Attempt:
    """One attempt under way: the channel sets the provider's ``status`` (an SMTP reply code,
    an HTTP status) and may add attributes to ``span``."""

    def __init__(self, channel: str, span: Span) -> None:
        self.channel = channel
        self.span = span
        self.status: int | None = None


class DeliveryRecorder:
    """Records the delivery attempts of the runs of one recorder."""

    def __init__(self, metrics: "DeliveryMetrics", tracer_provider: TracerProvider) -> None:
        self.metrics = metrics
        self.tracer = scope.tracer(tracer_provider, "observability.delivery")
        self._unsampled_child = unsampled_child(tracer_provider)
        self.log = get_logger("observability.delivery")

    @contextmanager
    def attempt(
        self, run: Run, channel: str, name: str | None, attributes: Mapping[str, AttributeValue]
    ) -> Iterator[Attempt]:
        """``name`` None: no span (a file write, which the task's span covers)."""
        number = run.envelope.retries + 1
        span: Span = trace.INVALID_SPAN
        if name is not None:
            span = self._stand_in() or self.tracer.start_span(
                name,
                kind=SpanKind.CLIENT,
                attributes={
                    **attributes,
                    names.ATTR_DELIVERY_CHANNEL: channel,
                    names.ATTR_DELIVERY_ATTEMPT: number,
                },
            )
        current = Attempt(channel, span)
        token = otel_context.attach(trace.set_span_in_context(span)) if name else None
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield current
        except BaseException as exc:
            error = exc
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            self._record(run, current, time.perf_counter() - started, error, number)

    def _stand_in(self) -> Span | None:
        """The attempt's span if the task's span is not sampled (see ``stand_in``)."""
        if self._unsampled_child is None:
            return None
        return self._unsampled_child(trace.get_current_span().get_span_context())

    def _record(
        self, run: Run, attempt: Attempt, duration: float, error: BaseException | None, number: int
    ) -> None:
        channel, span = attempt.channel, attempt.span
        result = _result(error)
        attempts, durations = self.metrics.series(channel, result)
        attempts.inc()
        durations.observe(duration, exemplar=ids.exemplar(span.get_span_context()))
        if error is not None:
            error_type = type(error).__name__
            self.metrics.errors.labels(channel, error_type).inc()
            if span.is_recording():
                span.set_attribute("error.type", error_type)
                mark_failed(span, error_type, str(error), error, mask)
        if span is not trace.INVALID_SPAN:
            span.end()
        run.details.update(
            channel=channel, attempts=number, delivery_result=result, provider_status=attempt.status
        )

    def skipped(self, run: Run, channel: str) -> None:
        """The task's message was delivered by an earlier run: not sent again."""
        self.metrics.skipped.labels(channel).inc()
        run.details.update(channel=channel, delivery_result="already_delivered")
        self.log.info(
            names.EVENT_DELIVERY_SKIPPED,
            task=run.envelope.name,
            task_id=run.envelope.id,
            channel=channel,
            **run.log_ids,
        )


def _result(error: BaseException | None) -> str:
    if error is None:
        return names.RESULT_DELIVERED
    return names.RESULT_TRANSIENT if RetryPolicy.retryable(error) else names.RESULT_PERMANENT


@contextmanager
def attempt(
    channel: str, name: str | None = None, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Attempt]:
    """Observe one delivery attempt of the current task run (nothing is recorded outside a
    run). ``name``: the CLIENT span's name (``POST``, ``smtp send``; None: no span of its own);
    ``attributes``: the semantic conventions' (``server.address``, ``server.port``, ...), never
    user values."""
    run = current_run()
    if run is None or run.delivery is None:  # outside a run: nothing to record it on
        yield Attempt(channel, trace.INVALID_SPAN)
        return
    with run.delivery.attempt(run, channel, name, attributes or {}) as observed:
        yield observed


def skipped(channel: str) -> None:
    """Tell the current run's recorder that the delivery was skipped (delivered before)."""
    run = current_run()
    if run is not None and run.delivery is not None:
        run.delivery.skipped(run, channel)


def current_task_id() -> str | None:
    """The id of the task whose run this code is part of (an idempotency key for a
    provider), or None outside a run."""
    run = current_run()
    return None if run is None else run.envelope.id
