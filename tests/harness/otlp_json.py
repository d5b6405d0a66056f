"""Reads what the collector's file exporter wrote (OTLP/JSON, one export per line)
into flat records that tests can assert on."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
METRIC_DATA_TYPES = ("sum", "gauge", "histogram", "exponentialHistogram", "summary")
R = TypeVar("R")


@dataclass(frozen=True)
class SpanRecord:
    """One span as the collector received it."""

    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: str
    service_name: str
    resource: dict[str, Any]
    scope_name: str
    attributes: dict[str, Any]
    # In the order sent, repeats kept: `attributes` keeps the last of a repeated key.
    attribute_keys: list[str]
    links: list[dict[str, Any]]
    status_code: str
    status_message: str
    events: list[dict[str, Any]]
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class LogRecordView:
    """One log record as the collector received it."""

    trace_id: str
    span_id: str
    body: Any
    severity_text: str
    attributes: dict[str, Any]
    service_name: str
    resource: dict[str, Any]
    event_name: str
    time_unix_nano: int


@dataclass(frozen=True)
class MetricRecord:
    """One metric of one export, with its data points left as OTLP/JSON."""

    name: str
    service_name: str
    unit: str
    data_points: list[dict[str, Any]]


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a Python value (64-bit integers arrive as strings)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(item) for item in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes(key_values: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: any_value(kv.get("value", {})) for kv in key_values}


def read_exports(path: Path) -> list[dict[str, Any]]:
    """Every complete export in the file; a line still being written is skipped."""
    if not path.exists():
        return []
    exports = []
    for line in path.read_text().splitlines():
        try:
            exports.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return exports


def records(path: Path, signal: str, items: str) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """Each record of one signal's exports with its resource's attributes and its scope's name.
    OTLP nests records in resource, then scope; `signal` is `Spans`, `Logs` or `Metrics` as in
    `resourceSpans`, `items` the records' key (`spans`, `logRecords`, `metrics`)."""
    for export in read_exports(path):
        for resource_records in export.get(f"resource{signal}", []):
            resource = attributes(resource_records.get("resource", {}).get("attributes", []))
            for scope_records in resource_records.get(f"scope{signal}", []):
                scope_name = scope_records.get("scope", {}).get("name", "")
                for record in scope_records.get(items, []):
                    yield resource, scope_name, record


def _read(path: Path, signal: str, items: str, record: Callable[[dict[str, Any], str, dict[str, Any]], R]) -> list[R]:
    """`record(resource, scope_name, item)` of each record of one signal (as `records` yields them)."""
    return [record(resource, scope_name, item) for resource, scope_name, item in records(path, signal, items)]


def _span(resource: dict[str, Any], scope_name: str, span: dict[str, Any]) -> SpanRecord:
    return SpanRecord(
        trace_id=span.get("traceId", ""),
        span_id=span.get("spanId", ""),
        parent_span_id=span.get("parentSpanId", ""),
        trace_state=span.get("traceState", ""),
        name=span.get("name", ""),
        kind=SPAN_KINDS.get(span.get("kind", 0), "unspecified"),
        service_name=resource.get("service.name", ""),
        resource=resource,
        scope_name=scope_name,
        attributes=attributes(span.get("attributes", [])),
        attribute_keys=[kv["key"] for kv in span.get("attributes", [])],
        links=[
            {
                "trace_id": link.get("traceId", ""),
                "span_id": link.get("spanId", ""),
                "attributes": attributes(link.get("attributes", [])),
            }
            for link in span.get("links", [])
        ],
        status_code=STATUS_CODES.get(span.get("status", {}).get("code", 0), "unset"),
        status_message=span.get("status", {}).get("message", ""),
        events=[
            {"name": event.get("name", ""), "attributes": attributes(event.get("attributes", []))}
            for event in span.get("events", [])
        ],
        start_ns=int(span.get("startTimeUnixNano", 0)),
        end_ns=int(span.get("endTimeUnixNano", 0)),
    )


def _log(resource: dict[str, Any], _scope_name: str, record: dict[str, Any]) -> LogRecordView:
    return LogRecordView(
        trace_id=record.get("traceId", ""),
        span_id=record.get("spanId", ""),
        body=any_value(record.get("body", {})),
        severity_text=record.get("severityText", ""),
        attributes=attributes(record.get("attributes", [])),
        service_name=resource.get("service.name", ""),
        resource=resource,
        event_name=record.get("eventName", ""),
        time_unix_nano=int(record.get("timeUnixNano", 0)),
    )


def _metric(resource: dict[str, Any], _scope_name: str, metric: dict[str, Any]) -> MetricRecord:
    return MetricRecord(
        name=metric.get("name", ""),
        service_name=resource.get("service.name", ""),
        unit=metric.get("unit", ""),
        data_points=next((metric[kind] for kind in METRIC_DATA_TYPES if kind in metric), {}).get("dataPoints", []),
    )


def spans(path: Path) -> list[SpanRecord]:
    return _read(path, "Spans", "spans", _span)


def logs(path: Path) -> list[LogRecordView]:
    return _read(path, "Logs", "logRecords", _log)


def metrics(path: Path) -> list[MetricRecord]:
    return _read(path, "Metrics", "metrics", _metric)
