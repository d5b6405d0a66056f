"""What the collector received, read for conformance checks: unlike `harness.otlp_json`, every
field a rule needs (repeated attribute keys, trace state, event names, timestamps, metric
temporality) is kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.otlp_json import METRIC_DATA_TYPES, SPAN_KINDS, STATUS_CODES, any_value, attributes, records

TEMPORALITIES = {0: "unspecified", 1: "delta", 2: "cumulative"}


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: str
    service: str
    resource: dict[str, Any]
    attributes: dict[str, Any]
    attribute_keys: list[str]
    status: str
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]


@dataclass(frozen=True)
class Log:
    trace_id: str
    span_id: str
    service: str
    resource: dict[str, Any]
    attributes: dict[str, Any]
    event_name: str
    time_unix_nano: int
    body: Any


@dataclass(frozen=True)
class Point:
    metric: str
    service: str
    unit: str
    data_type: str
    temporality: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Signals:
    """Everything one collector wrote, and the raw text of its files."""

    spans: list[Span]
    logs: list[Log]
    points: list[Point]
    raw_text: str


def read(output_dir: Path) -> Signals:
    files = {signal: output_dir / f"{signal}.jsonl" for signal in ("traces", "logs", "metrics")}
    raw_text = "\n".join(path.read_text() for path in files.values() if path.exists())
    return Signals(_spans(files["traces"]), _logs(files["logs"]), _points(files["metrics"]), raw_text)


def _spans(path: Path) -> list[Span]:
    return [
        Span(
            trace_id=span.get("traceId", ""),
            span_id=span.get("spanId", ""),
            parent_span_id=span.get("parentSpanId", ""),
            trace_state=span.get("traceState", ""),
            name=span.get("name", ""),
            kind=SPAN_KINDS.get(span.get("kind", 0), "unspecified"),
            service=resource.get("service.name", ""),
            resource=resource,
            attributes=attributes(span.get("attributes", [])),
            attribute_keys=[kv["key"] for kv in span.get("attributes", [])],
            status=STATUS_CODES.get(span.get("status", {}).get("code", 0), "unset"),
            events=[
                {"name": event.get("name", ""), "attributes": attributes(event.get("attributes", []))}
                for event in span.get("events", [])
            ],
            links=[
                {"trace_id": link.get("traceId", ""), "span_id": link.get("spanId", "")}
                for link in span.get("links", [])
            ],
        )
        for resource, _, span in records(path, "Spans", "spans")
    ]


def _logs(path: Path) -> list[Log]:
    return [
        Log(
            trace_id=record.get("traceId", ""),
            span_id=record.get("spanId", ""),
            service=resource.get("service.name", ""),
            resource=resource,
            attributes=attributes(record.get("attributes", [])),
            event_name=record.get("eventName", ""),
            time_unix_nano=int(record.get("timeUnixNano", 0)),
            body=any_value(record.get("body", {})),
        )
        for resource, _, record in records(path, "Logs", "logRecords")
    ]


def _points(path: Path) -> list[Point]:
    points = []
    for resource, _, metric in records(path, "Metrics", "metrics"):
        for data_type in METRIC_DATA_TYPES:
            if data_type not in metric:
                continue
            data = metric[data_type]
            temporality = TEMPORALITIES.get(data.get("aggregationTemporality", 0), "unspecified")
            points += [
                Point(
                    metric=metric.get("name", ""),
                    service=resource.get("service.name", ""),
                    unit=metric.get("unit", ""),
                    data_type=data_type,
                    temporality=temporality,
                    attributes=attributes(point.get("attributes", [])),
                )
                for point in data.get("dataPoints", [])
            ]
    return points
