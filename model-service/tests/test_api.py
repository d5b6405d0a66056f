"""The HTTP API: every endpoint's answers and error paths, through a test client of create_app."""

from dataclasses import dataclass
from typing import Any

import pytest

from model_service.api.dependencies import get_prediction_service
from model_service.core.config import Settings
from model_service.train import run_training

KNOWN_ID = "cust-000042"


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert len(error["trace_id"]) == 32
    assert "Traceback" not in response.text
    return error


def test_predict_returns_the_prediction_and_the_model_for_a_known_id(client, shipped_model):
    response = client.post("/predict", json={"data_id": KNOWN_ID})

    assert response.status_code == 200
    body = response.json()
    assert body["data_id"] == KNOWN_ID
    assert body["prediction"]["label"] in ("no_default", "default")
    assert sum(body["prediction"]["probabilities"].values()) == pytest.approx(1.0)
    assert body["model"] == {
        "name": "credit-default",
        "version": shipped_model.metadata.version,
        "run_id": shipped_model.metadata.run_id,
    }


def test_predict_answers_the_same_for_the_same_id_and_version(client):
    first = client.post("/predict", json={"data_id": KNOWN_ID}).json()
    second = client.post("/predict", json={"data_id": KNOWN_ID}).json()

    assert first == second


def test_predict_batch_returns_known_ids_once_in_order_and_lists_unknown_ones(client):
    response = client.post("/predict/batch", json={"data_ids": ["cust-000003", "ghost", "cust-000001", "cust-000003"]})

    assert response.status_code == 200
    body = response.json()
    assert [item["data_id"] for item in body["predictions"]] == ["cust-000003", "cust-000001"]
    assert body["not_found"] == ["ghost"]
    assert body["model"]["version"] == "v1"
    single = client.post("/predict", json={"data_id": "cust-000001"}).json()
    assert body["predictions"][1]["prediction"] == single["prediction"]


def test_predict_batch_of_no_ids_is_an_empty_answer(client):
    response = client.post("/predict/batch", json={"data_ids": []})

    assert response.status_code == 200
    assert response.json()["predictions"] == []


def test_get_model_describes_the_served_version(client, shipped_model):
    body = client.get("/model").json()

    assert body["version"] == shipped_model.metadata.version
    assert body["run_id"] == shipped_model.metadata.run_id
    assert body["trained_at"] == shipped_model.metadata.trained_at
    assert body["metrics"]["validation_accuracy"] == shipped_model.metadata.metrics["validation_accuracy"]
    assert body["hyperparameters"]["learning_rate"] == 0.1
    assert body["features"][0] == {
        "name": "age",
        "type": "float32",
        "description": "age of the card holder in years",
    }


def test_health_is_ok_with_the_served_model(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["model"]["version"] == "v1"


def test_without_a_trained_model_health_and_predictions_answer_503(small_settings, client_for):
    client = client_for(small_settings)

    health = client.get("/health")
    predict = client.post("/predict", json={"data_id": KNOWN_ID})

    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "model": None}
    assert_error(predict, 503, "model_unavailable")
    assert predict.headers["retry-after"]
    assert_error(client.get("/model"), 503, "model_unavailable")


@dataclass(frozen=True)
class BadRequest:
    description: str
    method: str
    path: str
    body: Any
    status: int
    code: str


BAD_REQUESTS = [
    BadRequest("an unknown data id", "POST", "/predict", {"data_id": "cust-999999"}, 404, "unknown_data_id"),
    BadRequest("a body that is not JSON", "POST", "/predict", b'{"data_id": ', 400, "malformed_body"),
    BadRequest("no data id", "POST", "/predict", {}, 422, "invalid_request"),
    BadRequest("a data id that is a number", "POST", "/predict", {"data_id": 42}, 422, "invalid_request"),
    BadRequest("an empty data id", "POST", "/predict", {"data_id": ""}, 422, "invalid_request"),
    BadRequest("a data id of 257 characters", "POST", "/predict", {"data_id": "x" * 257}, 422, "invalid_request"),
    BadRequest("a list instead of an object", "POST", "/predict", [KNOWN_ID], 422, "invalid_request"),
    BadRequest("data ids that are not a list", "POST", "/predict/batch", {"data_ids": "a"}, 422, "invalid_request"),
    BadRequest("a batch of 1,001 ids", "POST", "/predict/batch", {"data_ids": ["a"] * 1001}, 422, "batch_too_large"),
    BadRequest("an unknown path", "GET", "/nothing-here", None, 404, "not_found"),
    BadRequest("the wrong method", "GET", "/predict", None, 405, "method_not_allowed"),
    BadRequest("an unknown model version", "POST", "/admin/model", {"version": "v404"}, 404, "unknown_model_version"),
    BadRequest("an error rate above 1", "PUT", "/admin/faults", {"error_rate": 2.0}, 422, "invalid_request"),
    BadRequest("a negative latency", "PUT", "/admin/faults", {"latency_ms": -1}, 422, "invalid_request"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case.description for case in BAD_REQUESTS])
def test_a_bad_request_gets_a_json_error_and_no_stack_trace(client, case):
    if isinstance(case.body, bytes):
        response = client.request(
            case.method, case.path, content=case.body, headers={"content-type": "application/json"}
        )
    else:
        response = client.request(case.method, case.path, json=case.body)

    assert_error(response, case.status, case.code)


def test_an_invalid_request_says_which_field_is_wrong(client):
    error = assert_error(client.post("/predict", json={"data_id": 42}), 422, "invalid_request")

    assert "data_id" in error["message"]


def test_a_batch_of_many_invalid_ids_gets_a_short_message(client):
    error = assert_error(client.post("/predict/batch", json={"data_ids": list(range(100))}), 422, "invalid_request")

    assert error["message"].endswith("; and 95 more")


def test_an_unexpected_error_is_an_opaque_500(client):
    class BrokenService:
        def predict(self, _):
            raise RuntimeError("secret connection string")

    client.app.dependency_overrides[get_prediction_service] = BrokenService

    error = assert_error(client.post("/predict", json={"data_id": KNOWN_ID}), 500, "internal_error")

    assert "secret" not in error["message"]


def test_the_served_version_can_be_switched_at_run_time(small_settings, small_hyperparameters, client_for):
    first = run_training(small_settings, small_hyperparameters)
    second = run_training(small_settings, small_hyperparameters)
    client = client_for(small_settings)
    assert client.get("/model").json()["run_id"] == second.metadata.run_id

    switched = client.post("/admin/model", json={"version": "v1"})

    assert switched.status_code == 200
    assert switched.json()["run_id"] == first.metadata.run_id
    assert client.post("/predict", json={"data_id": KNOWN_ID}).json()["model"]["version"] == "v1"
    assert client.post("/admin/model", json={}).json()["version"] == "v2"


def test_the_service_serves_the_version_it_is_told_to(small_settings, small_hyperparameters, client_for, monkeypatch):
    first = run_training(small_settings, small_hyperparameters)
    run_training(small_settings, small_hyperparameters)
    monkeypatch.setenv("MODEL_SERVICE__MODEL_VERSION", "v1")

    client = client_for(Settings(model_dir=small_settings.model_dir, data_dir=small_settings.data_dir))

    assert client.get("/health").json()["model"]["run_id"] == first.metadata.run_id


def test_stats_count_requests_and_predicted_ids(client):
    client.post("/predict", json={"data_id": KNOWN_ID})
    client.post("/predict", json={"data_id": "ghost"})
    client.post("/predict/batch", json={"data_ids": ["cust-000001", "cust-000002", "ghost"]})

    assert client.get("/admin/stats").json() == {
        "predict_requests": 2,
        "batch_requests": 1,
        "predicted_ids": 3,
    }
