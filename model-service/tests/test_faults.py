"""Fault injection: off by default, set by environment, changed at run time, visible in traces."""

import time

from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_ESCAPED, EXCEPTION_TYPE
from opentelemetry.trace import StatusCode

from model_service.core.config import Settings

KNOWN_ID = "cust-000042"


def test_faults_are_off_by_default(client):
    assert client.get("/admin/faults").json() == {"latency_ms": 0, "error_rate": 0.0}


def test_an_error_rate_of_one_fails_every_prediction_with_the_exception_recorded_once(client, telemetry):
    client.put("/admin/faults", json={"latency_ms": 0, "error_rate": 1.0})
    telemetry.clear()

    response = client.post("/predict", json={"data_id": KNOWN_ID})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "injected_fault"
    [server] = telemetry.spans_named("POST /predict")
    [fault] = telemetry.spans_named("inject_fault")
    assert server.status.status_code == StatusCode.ERROR
    assert fault.status.status_code == StatusCode.ERROR
    assert fault.parent.span_id == server.context.span_id
    assert not telemetry.spans_named("predict")
    # One failure, one exception record (Kibana counts each as an error), where it happened.
    exceptions = [
        (span.name, event) for span in telemetry.spans() for event in span.events if event.name == "exception"
    ]
    assert [name for name, _ in exceptions] == ["inject_fault"]
    [(_, event)] = exceptions
    assert event.attributes[EXCEPTION_TYPE].endswith("InjectedFaultError")
    # A boolean, never the SDK's string "True"/"False".
    assert event.attributes[EXCEPTION_ESCAPED] is True


def test_added_latency_delays_predictions_and_shows_as_a_span(client, telemetry):
    client.put("/admin/faults", json={"latency_ms": 120, "error_rate": 0.0})
    telemetry.clear()

    started = time.monotonic()
    response = client.post("/predict", json={"data_id": KNOWN_ID})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.12
    [fault] = telemetry.spans_named("inject_fault")
    assert fault.attributes["fault.latency_ms"] == 120
    assert (fault.end_time - fault.start_time) / 1e9 >= 0.12


def test_faults_apply_to_batches_and_not_to_health(client):
    client.put("/admin/faults", json={"latency_ms": 0, "error_rate": 1.0})

    assert client.post("/predict/batch", json={"data_ids": [KNOWN_ID]}).status_code == 500
    assert client.get("/health").status_code == 200
    assert client.get("/model").status_code == 200


def test_turning_faults_off_restores_service(client):
    client.put("/admin/faults", json={"latency_ms": 0, "error_rate": 1.0})

    turned_off = client.put("/admin/faults", json={"latency_ms": 0, "error_rate": 0.0})

    assert turned_off.json() == {"latency_ms": 0, "error_rate": 0.0}
    assert client.post("/predict", json={"data_id": KNOWN_ID}).status_code == 200


def test_faults_can_be_set_by_the_environment(shipped_settings, client_for, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE__FAULT_ERROR_RATE", "1.0")
    monkeypatch.setenv("MODEL_SERVICE__FAULT_LATENCY_MS", "5")

    client = client_for(
        Settings(
            model_dir=shipped_settings.model_dir,
            data_dir=shipped_settings.data_dir,
            admin_token=shipped_settings.admin_token,
        )
    )

    assert client.get("/admin/faults").json() == {"latency_ms": 5, "error_rate": 1.0}
    assert client.post("/predict", json={"data_id": KNOWN_ID}).status_code == 500


def test_an_unexpected_error_is_an_opaque_500_recorded_once_on_the_server_span(client, telemetry):
    def failing_route() -> None:
        raise RuntimeError("disk on fire")

    # A real route of the real app, so the error takes the path of any bug in a handler.
    client.app.add_api_route("/failing", failing_route)
    client.app.middleware_stack = None

    response = client.get("/failing")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "disk on fire" not in response.text
    [server] = telemetry.spans_named("GET /failing")
    assert server.status.status_code == StatusCode.ERROR
    [event] = [event for span in telemetry.spans() for event in span.events if event.name == "exception"]
    assert event.attributes[EXCEPTION_TYPE] == "RuntimeError"
    assert event.attributes[EXCEPTION_ESCAPED] is False
