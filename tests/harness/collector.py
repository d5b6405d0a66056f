"""The test bed's OpenTelemetry Collector (built with the Collector Builder from
deploy/collector/builder-manifest.yaml): receives OTLP on free loopback ports and
writes every signal to a file the tests read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from harness import otlp_json
from harness.otlp_json import LogRecordView, MetricRecord, SpanRecord
from harness.polling import poll_until
from harness.ports import free_port
from harness.process import ManagedProcess

_SIGNALS = ("traces", "metrics", "logs")


def bed_config(grpc_port: int, http_port: int, health_port: int, output_dir: Path) -> dict:
    """The collector configuration of the bed: OTLP in, one JSON-lines file per signal out."""
    return {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_mib": 512},
            # Short batches: tests poll for what arrived and should not wait long.
            "batch": {"timeout": "100ms"},
        },
        "exporters": {
            f"file/{signal}": {"path": str(output_dir / f"{signal}.jsonl"), "flush_interval": "100ms"}
            for signal in _SIGNALS
        },
        "service": {
            "extensions": ["health_check"],
            # The collector's own metrics would listen on a fixed port (8888).
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                signal: {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": [f"file/{signal}"],
                }
                for signal in _SIGNALS
            },
        },
    }


class Collector:
    """A running collector and readers for what it received."""

    def __init__(self, process: ManagedProcess, grpc_port: int, http_port: int, output_dir: Path) -> None:
        self.process = process
        self.otlp_grpc_endpoint = f"http://127.0.0.1:{grpc_port}"
        self.otlp_http_endpoint = f"http://127.0.0.1:{http_port}"
        self.output_dir = output_dir

    @classmethod
    def start(cls, binary: Path, work_dir: Path, timeout: float = 60.0) -> Collector:
        grpc_port, http_port, health_port = free_port(), free_port(), free_port()
        output_dir = work_dir / "collector-output"
        output_dir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML, so the collector's YAML provider reads this file as is.
        config_path = work_dir / "collector-config.yaml"
        config_path.write_text(json.dumps(bed_config(grpc_port, http_port, health_port, output_dir), indent=2))
        process = ManagedProcess("collector", [binary, "--config", config_path], log_dir=work_dir / "logs").start()

        process.wait_until_ready(
            lambda: requests.get(f"http://127.0.0.1:{health_port}/", timeout=2).status_code == 200,
            "collector health check to answer 200",
            timeout=timeout,
        )
        return cls(process, grpc_port, http_port, output_dir)

    def spans(self) -> list[SpanRecord]:
        return otlp_json.spans(self.output_dir / "traces.jsonl")

    def logs(self) -> list[LogRecordView]:
        return otlp_json.logs(self.output_dir / "logs.jsonl")

    def metrics(self) -> list[MetricRecord]:
        return otlp_json.metrics(self.output_dir / "metrics.jsonl")

    def wait_for_spans(
        self, predicate: Callable[[list[SpanRecord]], object], description: str, timeout: float = 30.0
    ) -> list[SpanRecord]:
        """All spans received so far, once `predicate(spans)` holds."""

        def satisfied() -> list[SpanRecord] | None:
            received = self.spans()
            return received if predicate(received) else None

        return poll_until(satisfied, description, timeout=timeout, interval=0.2)

    def stop(self) -> None:
        self.process.stop()


# For a service that should export nothing (it still traces: ids, propagation).
NO_TELEMETRY_ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


def otel_env(collector: Collector, service_name: str) -> dict[str, str]:
    """OTEL_* variables that make a service export to `collector` quickly."""
    return {
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
