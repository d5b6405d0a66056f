"""What a caller cannot do to the service's telemetry, and the noise it no longer carries: baggage
that spoofs the service's own attributes or floods every span, repeated or ambiguous W3C header
fields, ASGI message spans, terminal-only log fields, empty OTEL_* variables."""

import os
import subprocess
import sys
import threading

import pytest
import uvicorn

from model_service.__main__ import bind
from model_service.attributes import (
    ML_BATCH_NOT_FOUND,
    ML_BATCH_SIZE,
    ML_CACHE_RESULT,
    ML_DATA_ID,
    ML_MODEL_VERSION,
    ML_PREDICTION_SCORE,
    ML_RUN_ID,
)
from model_service.core.config import Settings
from model_service.core.telemetry import MlBaggageSpanProcessor, empty_otel_variables
from model_service.main import create_app

KNOWN_ID = "cust-000042"
CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-b7ad6b7169203331-01"
SPOOFING_BAGGAGE = "ml.run_id=spoofed-run,ml.model.version=v999,ml.data_id=spoofed,ml.cache.result=hit,ml.ok=kept"


def _predict_server_span(client, telemetry, headers: list[tuple[str, str]]):
    """The server span of one `POST /predict` of `KNOWN_ID` sent with these header fields."""
    client.post("/predict", json={"data_id": KNOWN_ID}, headers=headers)
    [server] = telemetry.spans_named("POST /predict")
    return server


def test_baggage_never_sets_an_attribute_the_service_sets_itself_on_any_span(client, telemetry):
    body = client.post("/predict", json={"data_id": KNOWN_ID}, headers={"baggage": SPOOFING_BAGGAGE}).json()

    spans = telemetry.spans()
    assert {span.name for span in spans} >= {"POST /predict", "load_features", "predict"}
    for span in spans:
        attributes = span.attributes
        # Where the service sets them, its values; where it does not, nothing of the caller's.
        assert attributes.get(ML_RUN_ID) in (None, body["model"]["run_id"]), span.name
        assert attributes.get(ML_MODEL_VERSION) in (None, body["model"]["version"]), span.name
        assert attributes.get(ML_DATA_ID) in (None, KNOWN_ID), span.name
        assert ML_CACHE_RESULT not in attributes, span.name
        assert attributes["ml.ok"] == "kept", span.name
    [load_features] = telemetry.spans_named("load_features")
    assert ML_RUN_ID not in load_features.attributes
    assert load_features.attributes[ML_DATA_ID] == KNOWN_ID


def test_baggage_copied_onto_spans_is_capped_by_the_default_settings(client, telemetry):
    defaults = Settings()
    flood = ",".join(f"ml.entry{index:02d}={'v' * 100}" for index in range(64))

    client.post("/predict", json={"data_id": KNOWN_ID}, headers={"baggage": flood})

    for span in telemetry.spans():
        copied = {key: value for key, value in span.attributes.items() if key.startswith("ml.entry")}
        assert 0 < len(copied) <= defaults.baggage_max_entries, span.name
        assert sum(len(key) + len(value) for key, value in copied.items()) <= defaults.baggage_max_bytes, span.name
        assert "ml.entry00" in copied, "entries are taken in header order"


@pytest.mark.parametrize(
    ("description", "max_entries", "max_bytes", "expected"),
    [
        ("within both caps", 5, 100, ["ml.a", "ml.b", "ml.c"]),
        ("the entry cap", 2, 100, ["ml.a", "ml.b"]),
        ("the byte cap: ml.a=1 and ml.b=22 are 11 bytes", 5, 11, ["ml.a", "ml.b"]),
        ("no baggage at all", 0, 100, []),
    ],
)
def test_the_baggage_caps_take_entries_in_order_until_one_is_reached(description, max_entries, max_bytes, expected):
    processor = MlBaggageSpanProcessor(max_entries=max_entries, max_bytes=max_bytes)
    entries = {"ml.a": "1", "tenant": "acme", "ml.b": "22", ML_RUN_ID: "spoofed", "ml.c": "333"}

    assert list(processor.copied(entries, present={})) == expected, description


def test_repeated_baggage_fields_are_combined(client, telemetry):
    server = _predict_server_span(
        client, telemetry, [("traceparent", TRACEPARENT), ("baggage", "ml.a=1"), ("baggage", "ml.b=2")]
    )
    assert server.attributes["ml.a"] == "1"
    assert server.attributes["ml.b"] == "2"


def test_two_traceparent_fields_start_a_new_trace(client, telemetry):
    other = f"00-{'1' * 32}-{'2' * 16}-01"

    server = _predict_server_span(client, telemetry, [("traceparent", TRACEPARENT), ("traceparent", other)])
    assert server.parent is None
    assert format(server.context.trace_id, "032x") not in (CALLER_TRACE_ID, "1" * 32)


def test_repeated_tracestate_fields_are_combined_on_the_callers_context(client, telemetry):
    server = _predict_server_span(
        client, telemetry, [("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")]
    )
    assert format(server.parent.trace_id, "032x") == CALLER_TRACE_ID
    assert list(server.parent.trace_state.items()) == [("a", "1"), ("b", "2")]


def test_a_request_has_no_asgi_receive_or_send_spans(client, telemetry):
    client.post("/predict", json={"data_id": KNOWN_ID})

    [server] = telemetry.spans_named("POST /predict")
    children = [
        span.name for span in telemetry.spans() if span.parent and span.parent.span_id == server.context.span_id
    ]
    assert children == ["load_features", "predict"]


def test_the_prediction_log_carries_the_score_the_predict_span_has(client, telemetry):
    client.post("/predict", json={"data_id": KNOWN_ID})

    [predict] = telemetry.spans_named("predict")
    [record] = [log.log_record for log in telemetry.logs() if log.log_record.body == "prediction made"]
    assert record.attributes[ML_PREDICTION_SCORE] == predict.attributes[ML_PREDICTION_SCORE]
    assert 0.0 <= record.attributes[ML_PREDICTION_SCORE] <= 1.0


def test_the_batch_server_span_says_how_many_ids_were_not_found(client, telemetry):
    client.post("/predict/batch", json={"data_ids": [KNOWN_ID, "ghost", "phantom"]})

    [server] = telemetry.spans_named("POST /predict/batch")
    assert server.attributes[ML_BATCH_SIZE] == 3
    assert server.attributes[ML_BATCH_NOT_FOUND] == 2


def test_uvicorns_own_logs_reach_otlp_without_their_terminal_colour_copy(shipped_settings, telemetry):
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(shipped_settings), log_config=None, access_log=False))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    serving.start()
    try:
        # uvicorn logs "Started server process" before `started` turns true.
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
    finally:
        server.should_exit = True
        serving.join(timeout=10)
        listener.close()

    started = [log.log_record for log in telemetry.logs() if "Started server process" in str(log.log_record.body)]
    assert started, "uvicorn logged its start through the root logger's handlers"
    for log in telemetry.logs():
        assert "color_message" not in (log.log_record.attributes or {}), log.log_record.body


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": ""},
            ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"],
        ),
        ({"OTEL_TRACES_SAMPLER": "  "}, ["OTEL_TRACES_SAMPLER"]),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on", "MODEL_SERVICE__PORT": ""}, []),
    ],
)
def test_empty_otel_variables_are_found_and_nothing_else(environ, expected):
    assert empty_otel_variables(environ) == expected


def test_an_entry_point_restarts_itself_once_without_its_empty_otel_variables():
    # The entry points call this first; the restarted interpreter runs the same arguments.
    program = (
        "import os; from model_service.core.telemetry import restart_without_empty_otel_variables as restart; "
        "print('run', repr(os.environ.get('OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE')), flush=True); "
        "restart(); print('kept', os.environ['OTEL_SERVICE_NAME'])"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "",
        "OTEL_SERVICE_NAME": "model-service",
    }

    completed = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["run ''", "run None", "kept model-service"]
