"""Telemetry on top of EDOT Python: capped `ml.*` baggage onto spans, W3C propagation, the HTTP
instrumentation's options, JSON logs on stdout, the OTEL_* environment as the spec reads it, flush on exit.

`opentelemetry-instrument` (EDOT) builds the tracer, meter and logger providers and
their OTLP exporters from the standard OTEL_* variables before any of our code runs,
instruments FastAPI and ships `logging` records over OTLP. This module adds only what
the service needs on top, and is the one place that touches telemetry set-up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from fastapi import FastAPI
from opentelemetry import baggage, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.metrics import get_meter_provider
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

from model_service.attributes import SERVICE_OWNED
from model_service.core.config import Settings
from model_service.core.propagation import install_w3c_propagators

ML_PREFIX = "ml."
# uvicorn's coloured copy of a message, full of terminal escape codes: noise in any log store.
_TERMINAL_ONLY_RECORD_FIELDS = ("color_message",)
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class MlBaggageSpanProcessor(SpanProcessor):
    """Copies the caller's `ml.*` baggage entries onto every span as it starts, within caps.

    Never copied: names the service sets itself (attributes.SERVICE_OWNED), whichever
    span and in whatever order it sets them, so a caller cannot spoof a run id or a cache
    outcome; and names the span already has. Entries are taken in header order until
    `max_entries` entries or `max_bytes` bytes (names plus values, UTF-8) would be exceeded:
    a large `baggage` header must not multiply into every span of a request.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span.set_attributes(self.copied(baggage.get_all(parent_context), span.attributes or {}))

    def copied(self, entries: Mapping[str, object], present: Mapping[str, object]) -> dict[str, str]:
        """The entries of `entries` that go onto a span that already has `present`."""
        chosen: dict[str, str] = {}
        size = 0
        for key, value in entries.items():
            if not key.startswith(ML_PREFIX) or key in SERVICE_OWNED or key in present:
                continue
            size += len(key.encode()) + len(str(value).encode())
            if len(chosen) == self._max_entries or size > self._max_bytes:
                break
            chosen[key] = str(value)
        return chosen


class DropTerminalFields(logging.Filter):
    """Removes record fields meant for a terminal only (uvicorn's `color_message`) before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for field in _TERMINAL_ONLY_RECORD_FIELDS:
            record.__dict__.pop(field, None)
        return True


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


def empty_otel_variables(environ: Mapping[str, str]) -> list[str]:
    """OTEL_* variables set to nothing (or blanks).

    The OpenTelemetry specification reads an empty variable as unset; the Python SDK and
    EDOT do not (an empty OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE keeps EDOT from
    choosing delta and gives cumulative histograms, which the elasticsearch exporter drops).
    """
    return sorted(name for name, value in environ.items() if name.startswith("OTEL_") and not value.strip())


def restart_without_empty_otel_variables() -> None:
    """Re-run this process without its empty OTEL_* variables, if it has any; returns otherwise.

    `opentelemetry-instrument` configures everything before our code runs, so the only way to
    make it read the environment as the specification says is to start the interpreter again
    (same pid, same arguments) with those variables removed. Call it first in an entry point.
    """
    empty = empty_otel_variables(os.environ)
    if not empty:
        return
    for name in empty:
        del os.environ[name]
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def instrument_http(app: FastAPI) -> None:
    """Instrument `app` as `opentelemetry-instrument` does, minus the ASGI `http receive`/`http send` spans.

    Those internal spans (two or three per request) say nothing the server span does not;
    opentelemetry-instrumentation-fastapi 0.66b1 takes `exclude_spans` only as an argument,
    not from the environment, so the auto-instrumented app is instrumented again with it.
    Does nothing where the FastAPI instrumentation is not active (plain `python -m
    model_service`, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi, OTEL_SDK_DISABLED).
    """
    if not FastAPIInstrumentor().is_instrumented_by_opentelemetry:
        return
    FastAPIInstrumentor.uninstrument_app(app)
    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])
    # `uninstrument_app` builds the middleware stack at once, before `instrument_app` wraps the
    # builder: drop it so that the first request builds it with the instrumentation inside.
    app.middleware_stack = None


def configure_telemetry(settings: Settings) -> TelemetryGuard:
    """Add the baggage processor to the SDK's tracer provider (if one is installed), the W3C
    propagators, and stdout logging; keep terminal-only fields out of every log handler.

    Without `opentelemetry-instrument` the provider is OpenTelemetry's no-op one:
    the service then runs untraced and logs to stdout only.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(MlBaggageSpanProcessor(settings.baggage_max_entries, settings.baggage_max_bytes))
    install_w3c_propagators()
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    # Added next to, never instead of, the OTLP handler that instrumentation put on the root logger.
    root.addHandler(stdout)
    for handler in root.handlers:
        handler.addFilter(DropTerminalFields())
    root.setLevel(settings.log_level.upper())
    return TelemetryGuard()
