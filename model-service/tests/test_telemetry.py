"""Traces and logs of a prediction: the caller's trace continued, ml.* attributes and baggage, log ids."""

import json
import logging

import pytest
from opentelemetry import baggage, context, trace

from model_service.core.telemetry import JsonLogFormatter
from model_service.spans import start_span

KNOWN_ID = "cust-000042"
CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
CALLER_HEADERS = {
    "traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01",
    "baggage": "ml.experiment=fraud-holdout-7,tenant=acme",
}


def hex_trace_id(span) -> str:
    return format(span.context.trace_id, "032x")


@pytest.fixture
def traced_prediction(client, telemetry):
    response = client.post("/predict", json={"data_id": KNOWN_ID}, headers=CALLER_HEADERS)
    assert response.status_code == 200
    [server] = telemetry.spans_named("POST /predict")
    return response.json(), server


def test_the_server_span_continues_the_callers_trace(traced_prediction):
    _, server = traced_prediction

    assert hex_trace_id(server) == CALLER_TRACE_ID
    assert format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert server.kind == trace.SpanKind.SERVER


def test_load_features_and_predict_are_children_of_the_server_span(traced_prediction, telemetry):
    _, server = traced_prediction

    [load_features] = telemetry.spans_named("load_features")
    [predict] = telemetry.spans_named("predict")
    for child in (load_features, predict):
        assert child.parent.span_id == server.context.span_id
        assert hex_trace_id(child) == CALLER_TRACE_ID
    assert load_features.end_time <= predict.start_time


def test_spans_carry_the_ml_attributes(traced_prediction, telemetry):
    body, server = traced_prediction

    [load_features] = telemetry.spans_named("load_features")
    [predict] = telemetry.spans_named("predict")
    for span in (server, predict):
        assert span.attributes["ml.model.name"] == body["model"]["name"]
        assert span.attributes["ml.model.version"] == body["model"]["version"]
        assert span.attributes["ml.run_id"] == body["model"]["run_id"]
    for span in (server, load_features, predict):
        assert span.attributes["ml.data_id"] == KNOWN_ID
    assert predict.attributes["ml.prediction.label"] == body["prediction"]["label"]


def test_ml_baggage_becomes_an_attribute_of_every_span_and_other_baggage_does_not(traced_prediction, telemetry):
    for span in telemetry.spans():
        assert span.attributes["ml.experiment"] == "fraud-holdout-7", span.name
        assert "tenant" not in span.attributes


def test_the_server_span_follows_the_http_semantic_conventions(traced_prediction):
    _, server = traced_prediction

    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/predict"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == "/predict"


def test_a_prediction_log_carries_the_trace_and_the_ml_fields(traced_prediction, telemetry):
    body, server = traced_prediction

    [record] = [log.log_record for log in telemetry.logs() if log.log_record.body == "prediction made"]
    assert format(record.trace_id, "032x") == CALLER_TRACE_ID
    assert record.span_id == server.context.span_id
    assert record.attributes["ml.data_id"] == KNOWN_ID
    assert record.attributes["ml.model.version"] == body["model"]["version"]
    assert record.attributes["ml.prediction.label"] == body["prediction"]["label"]


def test_a_batch_is_one_load_features_and_one_predict(client, telemetry):
    client.post("/predict/batch", json={"data_ids": [KNOWN_ID, "cust-000001", "ghost"]}, headers=CALLER_HEADERS)

    [server] = telemetry.spans_named("POST /predict/batch")
    [load_features] = telemetry.spans_named("load_features")
    [predict] = telemetry.spans_named("predict")
    assert load_features.parent.span_id == predict.parent.span_id == server.context.span_id
    assert load_features.attributes["ml.data_ids.requested"] == 3
    assert load_features.attributes["ml.data_ids.missing"] == 1
    assert predict.attributes["ml.batch.size"] == 2
    assert server.attributes["ml.model.version"] == "v1"


def test_an_unknown_id_is_a_404_span_that_is_not_an_error(client, telemetry):
    client.post("/predict", json={"data_id": "ghost"})

    [server] = telemetry.spans_named("POST /predict")
    assert server.attributes["http.response.status_code"] == 404
    assert server.status.status_code != trace.StatusCode.ERROR
    assert not telemetry.spans_named("predict")


def test_attributes_a_span_sets_itself_win_over_baggage(telemetry):
    token = context.attach(baggage.set_baggage("ml.learning_rate", "from-baggage"))
    try:
        with start_span(trace.get_tracer("test"), "step", {"ml.learning_rate": 0.1}):
            pass
    finally:
        context.detach(token)

    [span] = telemetry.spans_named("step")
    assert span.attributes["ml.learning_rate"] == 0.1


def test_stdout_log_lines_are_json_with_trace_ids_and_extra_fields(telemetry):
    record = logging.LogRecord("model_service", logging.INFO, __file__, 1, "prediction made", (), None)
    record.__dict__["ml.data_id"] = KNOWN_ID

    with trace.get_tracer("test").start_as_current_span("request") as span:
        line = JsonLogFormatter().format(record)

    entry = json.loads(line)
    assert entry["message"] == "prediction made"
    assert entry["level"] == "INFO"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert entry["ml.data_id"] == KNOWN_ID
