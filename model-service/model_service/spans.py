"""Starts the service's custom spans so that their attributes survive EDOT's default sampler.

The SDK builds a span's attributes from the sampler's result, and EDOT's default
sampler (the composite parent-based ratio sampler wired in by
elastic/elastic-otel-python#410) returns only its own attributes, so attributes
passed to `start_as_current_span` are dropped (the same mechanism as
PrefectHQ/fastmcp#4539). Setting them right after the start keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue


@contextmanager
def start_span(tracer: trace.Tracer, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[trace.Span]:
    """`tracer.start_as_current_span(name)` with `attributes` set once it has started."""
    with tracer.start_as_current_span(name) as span:
        span.set_attributes(attributes)
        yield span
