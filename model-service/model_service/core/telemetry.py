"""Telemetry on top of EDOT Python: `ml.*` baggage onto spans, JSON logs on stdout, flush on exit.

`opentelemetry-instrument` (EDOT) builds the tracer, meter and logger providers and
their OTLP exporters from the standard OTEL_* variables before any of our code runs,
instruments FastAPI and ships `logging` records over OTLP. This module adds only what
the service needs on top, and is the one place that touches telemetry set-up.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import baggage, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.metrics import get_meter_provider
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

ML_PREFIX = "ml."
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
}


class MlBaggageSpanProcessor(SpanProcessor):
    """Copies the caller's `ml.*` baggage entries onto every span as it starts.

    Attributes the span was started with win: code that knows the typed value
    (a float learning rate, say) is not overwritten by baggage's string.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        present = span.attributes or {}
        for key, value in baggage.get_all(parent_context).items():
            if key.startswith(ML_PREFIX) and key not in present:
                span.set_attribute(key, str(value))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace and span ids, and `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD_RECORD_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TelemetryGuard:
    """Held by an entry point for its lifetime; `flush()` before exit sends what is still buffered."""

    def flush(self) -> None:
        for provider in (trace.get_tracer_provider(), get_logger_provider(), get_meter_provider()):
            force_flush = getattr(provider, "force_flush", None)
            if callable(force_flush):
                force_flush()


def configure_telemetry(log_level: str) -> TelemetryGuard:
    """Add the baggage processor to the SDK's tracer provider (if one is installed) and stdout logging.

    Without `opentelemetry-instrument` the provider is OpenTelemetry's no-op one:
    the service then runs untraced and logs to stdout only.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(MlBaggageSpanProcessor())
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    # Added next to, never instead of, the OTLP handler that instrumentation put on the root logger.
    root.addHandler(stdout)
    root.setLevel(log_level.upper())
    return TelemetryGuard()
