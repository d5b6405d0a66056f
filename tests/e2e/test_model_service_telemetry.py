"""The model service's telemetry on the real collector: a caller's trace is continued across the
language boundary, with the custom spans, their ml.* attributes, the caller's baggage and correlated logs."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.collector import Collector
from harness.model_service import RunningModelService, start_model_service
from harness.otlp_json import SpanRecord
from harness.polling import poll_until

KNOWN_ID = "cust-000042"
# Set through the standard OTEL_RESOURCE_ATTRIBUTES variable, to show it is honoured.
ENVIRONMENT = "test-bed"


@pytest.fixture(scope="module")
def model_service(bed_dir: Path, collector: Collector) -> Iterator[RunningModelService]:
    service = start_model_service(
        Path(sys.executable).parent,
        bed_dir,
        collector=collector,
        extra_env={"OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name={ENVIRONMENT}"},
    )
    yield service
    service.stop()


def spans_of_trace(collector: Collector, trace_id: str, names: set[str]) -> dict[str, SpanRecord]:
    """The trace's spans by name, once every one of `names` has arrived."""

    def named(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
        return {span.name: span for span in spans if span.trace_id == trace_id}

    spans = collector.wait_for_spans(lambda spans: names <= named(spans).keys(), f"spans {sorted(names)}")
    return named(spans)


def test_a_prediction_continues_the_callers_trace_on_the_collector(
    model_service: RunningModelService, collector: Collector
) -> None:
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
    experiment = f"e2e-{secrets.token_hex(4)}"

    response = model_service.predict(
        KNOWN_ID,
        headers={"traceparent": f"00-{trace_id}-{caller_span_id}-01", "baggage": f"ml.experiment={experiment}"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == model_service.model()["version"]
    spans = spans_of_trace(collector, trace_id, {"POST /predict", "load_features", "predict"})
    server, load_features, predict = spans["POST /predict"], spans["load_features"], spans["predict"]
    assert server.kind == "server"
    assert server.service_name == "model-service"
    assert server.resource["deployment.environment.name"] == ENVIRONMENT
    assert server.resource["telemetry.distro.name"] == "elastic"
    assert server.parent_span_id == caller_span_id
    assert server.attributes["http.route"] == "/predict"
    assert server.attributes["http.response.status_code"] == 200
    for child in (load_features, predict):
        assert child.parent_span_id == server.span_id, child.name
        assert server.start_ns <= child.start_ns <= child.end_ns <= server.end_ns, child.name
    for span in (server, load_features, predict):
        assert span.attributes["ml.data_id"] == KNOWN_ID, span.name
        assert span.attributes["ml.experiment"] == experiment, span.name
    for span in (server, predict):
        assert span.attributes["ml.model.name"] == body["model"]["name"], span.name
        assert span.attributes["ml.model.version"] == body["model"]["version"], span.name
        assert span.attributes["ml.run_id"] == body["model"]["run_id"], span.name
    assert predict.attributes["ml.prediction.label"] == body["prediction"]["label"]


def test_the_prediction_log_reaches_the_collector_with_the_trace_and_span_ids(
    model_service: RunningModelService, collector: Collector
) -> None:
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)

    model_service.predict(KNOWN_ID, headers={"traceparent": f"00-{trace_id}-{caller_span_id}-01"})

    server = spans_of_trace(collector, trace_id, {"POST /predict"})["POST /predict"]
    [record] = poll_until(
        lambda: [log for log in collector.logs() if log.trace_id == trace_id and log.body == "prediction made"],
        "the 'prediction made' log of the trace",
    )
    assert record.span_id == server.span_id
    assert record.service_name == "model-service"
    assert record.severity_text == "INFO"
    assert record.attributes["ml.data_id"] == KNOWN_ID
    assert record.attributes["ml.model.version"] == server.attributes["ml.model.version"]


def test_an_injected_fault_is_an_error_span_with_the_exception_on_the_collector(
    model_service: RunningModelService, collector: Collector
) -> None:
    trace_id = secrets.token_hex(16)
    model_service.set_faults(error_rate=1.0)
    try:
        response = model_service.predict(KNOWN_ID, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    finally:
        model_service.set_faults()

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "injected_fault"
    assert response.json()["error"]["trace_id"] == trace_id
    spans = spans_of_trace(collector, trace_id, {"POST /predict", "inject_fault"})
    assert spans["POST /predict"].status_code == "error"
    assert spans["inject_fault"].status_code == "error"
    assert any(event["name"] == "exception" for event in spans["inject_fault"].events)
