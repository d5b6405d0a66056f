"""What the collector received, read for conformance checks: the harness's spans and logs, and
metric points one by one with their data type and temporality."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.otlp_json import METRIC_DATA_TYPES, LogRecordView, SpanRecord, attributes, logs, records, spans

TEMPORALITIES = {0: "unspecified", 1: "delta", 2: "cumulative"}


@dataclass(frozen=True)
class Point:
    metric: str
    service_name: str
    unit: str
    data_type: str
    temporality: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Signals:
    """Everything one collector wrote, and the raw text of its files."""

    spans: list[SpanRecord]
    logs: list[LogRecordView]
    points: list[Point]
    raw_text: str


def read(output_dir: Path) -> Signals:
    files = {signal: output_dir / f"{signal}.jsonl" for signal in ("traces", "logs", "metrics")}
    raw_text = "\n".join(path.read_text() for path in files.values() if path.exists())
    return Signals(spans(files["traces"]), logs(files["logs"]), _points(files["metrics"]), raw_text)


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
                    service_name=resource.get("service.name", ""),
                    unit=metric.get("unit", ""),
                    data_type=data_type,
                    temporality=temporality,
                    attributes=attributes(point.get("attributes", [])),
                )
                for point in data.get("dataPoints", [])
            ]
    return points
