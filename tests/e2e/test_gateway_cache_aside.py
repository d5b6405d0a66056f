"""The gateway's cache-aside path end to end: the real gateway binary in front of the
real model service, storing in the real search node. Model calls are counted at the
model service (`GET /admin/stats`), documents read back from the search node."""

from __future__ import annotations

import random
import signal
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service, train_another_version
from harness.polling import poll_until
from harness.search_node import SearchNode

ALIAS = "gw-cache-aside"
# Gateway settings of this module: learn a version switch within half a second; give
# up on the model after 1.5 s so the latency fault below gives a quick 504.
GATEWAY_ENV = {"GATEWAY__MODEL__VERSION_REFRESH_MS": "500", "GATEWAY__MODEL__TIMEOUT_MS": "1500"}
# Distinct rows of the 120,000-row dataset, one per use, so no test sees another's cache.
_ROWS = random.Random().sample(range(120_000), 200)


def fresh_id() -> str:
    return f"cust-{_ROWS.pop():06d}"


@dataclass
class Stack:
    model: RunningModelService
    gateway: Gateway
    search_url: str
    work_dir: Path


@pytest.fixture(scope="module")
def stack(bed_dir: Path, search_node: SearchNode) -> Iterator[Stack]:
    work_dir = bed_dir / "gateway-cache-aside"
    model = start_model_service(Path(sys.executable).parent, work_dir)
    gateway = Gateway.start(work_dir, model.url, store_url=search_node.url, index_alias=ALIAS, extra_env=GATEWAY_ENV)
    poll_until(gateway.ready, "gateway readiness (search node and model service up)")
    yield Stack(model, gateway, search_node.url, work_dir)
    gateway.stop()
    model.stop()


def predict_calls(model: RunningModelService) -> int:
    return model.stats()["predict_requests"]


def stored_documents(search_url: str, data_id: str) -> list[dict]:
    """The documents of `data_id` in the gateway's alias, as the search node holds them."""
    requests.post(f"{search_url}/{ALIAS}/_refresh", timeout=10).raise_for_status()
    response = requests.post(
        f"{search_url}/{ALIAS}/_search", json={"query": {"term": {"data_id": data_id}}}, timeout=10
    )
    response.raise_for_status()
    return response.json()["hits"]["hits"]


def test_a_first_request_is_a_miss_with_one_model_call_and_the_second_a_hit_without(stack: Stack) -> None:
    data_id = fresh_id()
    calls_before = predict_calls(stack.model)

    first = stack.gateway.predict(data_id)
    calls_after_first = predict_calls(stack.model)
    second = stack.gateway.predict(data_id)
    calls_after_second = predict_calls(stack.model)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["cache"] == "miss"
    assert second.json()["cache"] == "hit"
    assert calls_after_first - calls_before == 1
    assert calls_after_second == calls_after_first
    for field in ("prediction", "model", "created_at", "data_id"):
        assert second.json()[field] == first.json()[field], field


def test_the_stored_document_holds_the_prediction_and_the_computing_trace(stack: Stack) -> None:
    data_id = fresh_id()

    response = stack.gateway.predict(data_id)

    assert response.status_code == 200, response.text
    body = response.json()
    [document] = stored_documents(stack.search_url, data_id)
    source = document["_source"]
    assert source["prediction"] == body["prediction"]
    assert source["model"] == body["model"]
    assert source["trace"]["id"] == body["trace_id"]
    assert len(source["span"]["id"]) == 16
    assert document["_index"] == f"{ALIAS}-v1"
    # The document id is a hash of the key, never the raw data id.
    assert len(document["_id"]) == 64
    assert set(document["_id"]) <= set("0123456789abcdef")
    assert response.headers["traceresponse"].split("-")[1] == body["trace_id"]


def test_the_index_has_the_explicit_mapping_behind_the_alias(stack: Stack) -> None:
    mapping = requests.get(f"{stack.search_url}/{ALIAS}/_mapping", timeout=10).json()

    [(index, content)] = mapping.items()
    properties = content["mappings"]["properties"]
    assert index == f"{ALIAS}-v1"
    assert properties["data_id"]["type"] == "keyword"
    assert properties["model"]["properties"]["version"]["type"] == "keyword"
    assert properties["created_at"]["type"] == "date"
    assert properties["trace"]["properties"]["id"]["type"] == "keyword"


def test_fifty_concurrent_requests_for_one_new_id_cost_one_model_call(stack: Stack) -> None:
    data_id = fresh_id()
    calls_before = predict_calls(stack.model)
    # Latency keeps the one model call open while the other 49 requests arrive.
    stack.model.set_faults(latency_ms=500)
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(lambda _: stack.gateway.predict(data_id), range(50)))
    finally:
        stack.model.set_faults()

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses if r.status_code != 200]
    assert predict_calls(stack.model) - calls_before == 1
    assert len({r.json()["created_at"] for r in responses}) == 1


def test_an_injected_model_error_is_an_opaque_502_and_model_latency_a_504(stack: Stack) -> None:
    stack.model.set_faults(error_rate=1.0)
    try:
        failed = stack.gateway.predict(fresh_id())
    finally:
        stack.model.set_faults()
    stack.model.set_faults(latency_ms=3_000)
    try:
        slow = stack.gateway.predict(fresh_id())
    finally:
        stack.model.set_faults()

    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["code"] == "model_bad_answer"
    assert "injected" not in failed.text
    assert slow.status_code == 504, slow.text
    assert slow.json()["error"]["code"] == "model_timeout"


def test_an_unknown_data_id_is_404_and_nothing_is_stored(stack: Stack) -> None:
    response = stack.gateway.predict("cust-999999999")

    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "unknown_data_id"
    assert stored_documents(stack.search_url, "cust-999999999") == []


def raw_get(url: str, path: bytes) -> int:
    """A GET with the path sent byte for byte (clients normalise `..`); the status."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


HOSTILE_BODY_IDS = [
    ("parent directory", "..", 400),
    ("slash", "/", 400),
    ("path traversal", "../../_cluster/settings", 400),
    ("encoded slash", "%2F", 400),
    ("search endpoint", "_search", 404),
    ("all indices", "_all", 404),
    ("wildcard", "*", 400),
    ("10,000 characters", "a" * 10_000, 400),
]
HOSTILE_PATHS = [
    ("dot-dot segment", b"/v1/predictions/..", 400),
    ("encoded slash", b"/v1/predictions/a%2Fb", 400),
    ("search endpoint", b"/v1/predictions/_search", 404),
    ("wildcard", b"/v1/predictions/*", 400),
    ("non-UTF-8 bytes", b"/v1/predictions/%FF%FE", 400),
    ("10,000 characters", b"/v1/predictions/" + b"a" * 10_000, 400),
]


def test_hostile_ids_never_reach_another_index_or_endpoint_of_the_search_node(stack: Stack) -> None:
    def indices() -> dict[str, str | None]:
        """Every index and its document count; computation leases come and go with any
        miss (a valid id the model does not know takes one), so only their index counts."""
        listing = requests.get(f"{stack.search_url}/_cat/indices", params={"format": "json"}, timeout=10).json()
        return {
            index["index"]: None if index["index"].endswith("-leases") else index["docs.count"] for index in listing
        }

    requests.post(f"{stack.search_url}/{ALIAS}/_refresh", timeout=10)
    before = indices()

    outcomes = [(d, stack.gateway.predict(data_id).status_code, expected) for d, data_id, expected in HOSTILE_BODY_IDS]
    outcomes += [(d, raw_get(stack.gateway.url, path), expected) for d, path, expected in HOSTILE_PATHS]

    requests.post(f"{stack.search_url}/{ALIAS}/_refresh", timeout=10)
    assert [(d, status) for d, status, _ in outcomes] == [(d, expected) for d, _, expected in outcomes]
    assert indices() == before, "no index created, no document written"


def test_after_the_model_service_switches_version_the_next_request_is_a_miss(stack: Stack) -> None:
    data_id = fresh_id()
    first = stack.gateway.predict(data_id)
    assert first.json()["cache"] == "miss", first.text
    old_version = first.json()["model"]["version"]
    train_another_version(Path(sys.executable).parent, stack.work_dir)
    new_version = stack.model.switch_model()["version"]
    assert new_version != old_version
    calls_before = predict_calls(stack.model)

    # Once the gateway has learned the new version, the old prediction is not "stored" any more.
    poll_until(
        lambda: stack.gateway.stored(data_id).status_code == 404,
        "the gateway to learn the new model version",
        timeout=15,
    )
    after = stack.gateway.predict(data_id)

    assert after.status_code == 200, after.text
    assert after.json()["cache"] == "miss"
    assert after.json()["model"]["version"] == new_version
    assert predict_calls(stack.model) - calls_before == 1
    assert {d["_source"]["model"]["version"] for d in stored_documents(stack.search_url, data_id)} == {
        old_version,
        new_version,
    }


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(stack: Stack) -> None:
    gateway = Gateway.start(stack.work_dir, stack.model.url, name="gateway-sigterm")
    stack.model.set_faults(latency_ms=1_000)
    # The model service is shared by the module: only a count above this one shows that
    # this request reached it, and so is in flight inside the gateway.
    predict_requests_before = stack.model.stats()["predict_requests"]
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(gateway.predict, fresh_id())
            poll_until(
                lambda: stack.model.stats()["predict_requests"] > predict_requests_before and not in_flight.done(),
                "request in flight",
            )
            gateway.process.send_signal(signal.SIGTERM)
            response = in_flight.result(timeout=30)
        exit_code = gateway.process.wait(timeout=30)
    finally:
        stack.model.set_faults()
        gateway.stop()

    assert response.status_code == 200, response.text
    assert exit_code == 0, gateway.process.log_text()[-2000:]


def test_a_batch_costs_one_model_call_for_its_misses_and_is_served_from_the_store_next_time(
    stack: Stack,
) -> None:
    ids = [fresh_id() for _ in range(5)]
    stack.gateway.predict(ids[0])
    before = stack.model.stats()

    first = requests.post(
        f"{stack.gateway.url}/v1/predict/batch", json={"data_ids": [*ids, "cust-999999999"]}, timeout=30
    )
    after_first = stack.model.stats()
    second = requests.post(f"{stack.gateway.url}/v1/predict/batch", json={"data_ids": ids}, timeout=30)
    after_second = stack.model.stats()

    assert first.status_code == 200, first.text
    body = first.json()
    assert [(p["data_id"], p["cache"]) for p in body["predictions"]] == [(ids[0], "hit")] + [
        (data_id, "miss") for data_id in ids[1:]
    ]
    assert body["not_found"] == ["cust-999999999"]
    assert after_first["batch_requests"] - before["batch_requests"] == 1
    assert after_first["predict_requests"] == before["predict_requests"]
    assert [p["cache"] for p in second.json()["predictions"]] == ["hit"] * 5
    assert after_second == after_first, "a batch of hits calls no model"
    [document] = stored_documents(stack.search_url, ids[1])
    assert document["_source"]["trace"]["id"] == body["trace_id"]


def test_with_compression_asked_for_the_nodes_gzip_answers_are_read_like_plain_ones(stack: Stack) -> None:
    # The node does compress when asked, so the gateway below really reads gzip answers.
    probe = requests.get(f"{stack.search_url}/{ALIAS}/_search", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert probe.headers.get("Content-Encoding") == "gzip", probe.headers
    gateway = Gateway.start(
        stack.work_dir,
        stack.model.url,
        store_url=stack.search_url,
        index_alias=ALIAS,
        extra_env={**GATEWAY_ENV, "GATEWAY__STORE__COMPRESSION": "true"},
        name="gateway-compression",
    )
    try:
        poll_until(gateway.ready, "the compressing gateway's readiness")
        ids = [fresh_id() for _ in range(3)]
        first = gateway.predict(ids[0])
        second = gateway.predict(ids[0])
        batch = requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": ids}, timeout=30)
        batch_again = requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": ids}, timeout=30)
    finally:
        gateway.stop()

    assert (first.json()["cache"], second.json()["cache"]) == ("miss", "hit"), (first.text, second.text)
    assert second.json()["prediction"] == first.json()["prediction"]
    assert batch.status_code == 200, batch.text
    assert [p["cache"] for p in batch_again.json()["predictions"]] == ["hit"] * 3, batch_again.text
