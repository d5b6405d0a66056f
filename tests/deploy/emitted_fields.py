"""What the services emit, in one place: the names the Kibana objects in deploy/
may use. The deploy tests compare every field and value the dashboard and the
alert rules name against these sets.

Today the sets are written down from the telemetry contract (SPEC.md, CONTRACT.md);
they are meant to be replaced by what the end-to-end tests capture at the test
collector (span names, span/log/resource attribute keys), without changing the
tests that read them: keep the names and types of the functions below.
`document_fields_of(records, signal)` turns captured SpanRecords / LogRecordViews
into these document field names.

Document field names follow the elasticsearch exporter's `otel` mapping mode
(the default of the compose stack): attributes under `attributes.*`, resource
attributes under `resource.attributes.*`, plus the fields the exporter writes
for every span and log record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class _Record(Protocol):
    """What a captured span (harness SpanRecord) or log record (LogRecordView) offers here."""

    attributes: dict[str, Any]
    resource: dict[str, Any]


SERVICE_NAMES = frozenset({"inference-gateway", "model-service"})

# Span names: the training pipeline's stages, the serving spans of the model
# service, the gateway's HTTP server span.
SPAN_NAMES = frozenset(
    {"load_data", "train_model", "evaluate", "load_features", "predict", "POST /v1/predict", "POST /v1/predict/batch"}
)

SPAN_ATTRIBUTES = frozenset(
    {
        "ml.data_id",
        "ml.model.name",
        "ml.model.version",
        "ml.run_id",
        "ml.cache.result",
        "http.request.method",
        "http.route",
        "http.response.status_code",
    }
)

LOG_ATTRIBUTES = frozenset({"ml.training_accuracy", "ml.validation_accuracy", "ml.drift_detected"})

RESOURCE_ATTRIBUTES = frozenset({"service.name"})

# Values of attributes that queries compare against.
ATTRIBUTE_VALUES: dict[str, frozenset] = {
    "ml.cache.result": frozenset({"hit", "miss", "bypass"}),
    "service.name": SERVICE_NAMES,
    "name": SPAN_NAMES,
}

# Written by the elasticsearch exporter (otel mode) for every span / log record.
_SPAN_DOCUMENT_FIELDS = frozenset(
    {"@timestamp", "name", "duration", "kind", "trace_id", "span_id", "parent_span_id", "status.code"}
)
_LOG_DOCUMENT_FIELDS = frozenset({"@timestamp", "body.text", "severity_text", "trace_id", "span_id"})


def span_document_fields() -> frozenset[str]:
    """Fields of a span document in `traces-*.otel-*`."""
    return (
        _SPAN_DOCUMENT_FIELDS
        | {f"attributes.{key}" for key in SPAN_ATTRIBUTES}
        | {f"resource.attributes.{key}" for key in RESOURCE_ATTRIBUTES}
    )


def log_document_fields() -> frozenset[str]:
    """Fields of a log document in `logs-*.otel-*`."""
    return (
        _LOG_DOCUMENT_FIELDS
        | {f"attributes.{key}" for key in LOG_ATTRIBUTES}
        | {f"resource.attributes.{key}" for key in RESOURCE_ATTRIBUTES}
    )


def known_values(document_field: str) -> frozenset | None:
    """The values a field is known to take, or None when any value is plausible."""
    key = document_field.removeprefix("resource.attributes.").removeprefix("attributes.")
    return ATTRIBUTE_VALUES.get(key)


def document_fields_of(records: Iterable[_Record], signal: str) -> frozenset[str]:
    """The document fields that captured records (the e2e tests' SpanRecords for
    `signal="traces"`, LogRecordViews for `"logs"`) become in the otel mapping: to
    replace the written-down sets above with what the services really sent."""
    fields = set(_SPAN_DOCUMENT_FIELDS if signal == "traces" else _LOG_DOCUMENT_FIELDS)
    for record in records:
        fields |= {f"attributes.{key}" for key in record.attributes}
        fields |= {f"resource.attributes.{key}" for key in record.resource}
    return frozenset(fields)
