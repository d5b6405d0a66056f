"""What the collector received, read for conformance checks: unlike `harness.otlp_json`, every
field a rule needs (repeated attribute keys, trace state, event names, timestamps, metric
temporality) is kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.otlp_json import any_value, attributes, read_exports

SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
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
    spans = []
    for export in read_exports(path):
        for resource_spans in export.get("resourceSpans", []):
            resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    raw_attributes = span.get("attributes", [])
                    spans.append(
                        Span(
                            trace_id=span.get("traceId", ""),
                            span_id=span.get("spanId", ""),
                            parent_span_id=span.get("parentSpanId", ""),
                            trace_state=span.get("traceState", ""),
                            name=span.get("name", ""),
                            kind=SPAN_KINDS.get(span.get("kind", 0), "unspecified"),
                            service=resource.get("service.name", ""),
                            resource=resource,
                            attributes=attributes(raw_attributes),
                            attribute_keys=[kv["key"] for kv in raw_attributes],
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
                    )
    return spans


def _logs(path: Path) -> list[Log]:
    logs = []
    for export in read_exports(path):
        for resource_logs in export.get("resourceLogs", []):
            resource = attributes(resource_logs.get("resource", {}).get("attributes", []))
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    logs.append(
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
                    )
    return logs


def _points(path: Path) -> list[Point]:
    points = []
    for export in read_exports(path):
        for resource_metrics in export.get("resourceMetrics", []):
            service = attributes(resource_metrics.get("resource", {}).get("attributes", [])).get("service.name", "")
            for scope_metrics in resource_metrics.get("scopeMetrics", []):
                for metric in scope_metrics.get("metrics", []):
                    for data_type in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                        if data_type not in metric:
                            continue
                        data = metric[data_type]
                        temporality = TEMPORALITIES.get(data.get("aggregationTemporality", 0), "unspecified")
                        for point in data.get("dataPoints", []):
                            points.append(
                                Point(
                                    metric=metric.get("name", ""),
                                    service=service,
                                    unit=metric.get("unit", ""),
                                    data_type=data_type,
                                    temporality=temporality,
                                    attributes=attributes(point.get("attributes", [])),
                                )
                            )
    return points
