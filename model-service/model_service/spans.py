"""Starts the service's custom spans, and records each exception on exactly one span.

Attributes are set right after the start: the SDK builds a span's attributes from the
sampler's result, and EDOT's default sampler (the composite parent-based ratio sampler
wired in by elastic/elastic-otel-python#410) returns only its own attributes, so
attributes passed to `start_as_current_span` are dropped (the same mechanism as
PrefectHQ/fastmcp#4539).

Exceptions: the SDK's own recording would put one failure on every span it passes
through (the `inject_fault` span, then the server span), which Kibana counts as
separate errors, and writes `exception.escaped` as the string "True"/"False". Here the
innermost span records it, once, with a boolean; outer spans only get the error status.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_ESCAPED
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

# Marks an exception already recorded on a span; exceptions take no weak references, so no WeakSet.
_RECORDED_MARK = "_model_service_recorded_on_span"


@contextmanager
def start_span(tracer: trace.Tracer, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[trace.Span]:
    """`tracer.start_as_current_span(name)` with `attributes` set once it has started; an
    exception leaving it is recorded here (unless an inner span did) and marks it failed."""
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        span.set_attributes(attributes)
        try:
            yield span
        except Exception as error:
            record_failure(span, error, escaped=True)
            raise


def record_failure(span: trace.Span, error: BaseException, escaped: bool) -> None:
    """Set `span`'s status to error and record `error` on it, unless a span already recorded it."""
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    if getattr(error, _RECORDED_MARK, False):
        return
    # The SDK writes `exception.escaped` as str(escaped); the attribute given here replaces it.
    span.record_exception(error, attributes={EXCEPTION_ESCAPED: escaped})
    setattr(error, _RECORDED_MARK, True)
