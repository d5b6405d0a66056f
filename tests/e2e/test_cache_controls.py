"""Cache identity and client controls end to end: the gateway binary in front of the real
model service, storing in the real search node. A retrained model under a reused version
label, each RFC 9111 request directive (single and batch), the RFC 9211 `Cache-Status`
header read as an RFC 8941 structured field, the telemetry of the directive, and
`gateway purge --keep N`. Model calls are counted at the model service (`/admin/stats`)."""

from __future__ import annotations

import json
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import http_sfv
import pytest
import requests

from harness import otlp_json
from harness.collector import NO_TELEMETRY_ENV, Collector
from harness.gateway import Gateway, gateway_binary
from harness.model_service import RunningModelService, start_model_service, train_another_version
from harness.polling import poll_until
from harness.search_node import SearchNode

VENV_BIN = Path(sys.executable).parent
ALIAS = "gw-cache-controls"
GATEWAY_SERVICE = "inference-gateway"
# The gateway follows the live model every second; a model call gives up after 1.5 s.
REFRESH_S, MODEL_TIMEOUT_S = 1.0, 1.5
GATEWAY_ENV = {
    "GATEWAY__MODEL__VERSION_REFRESH_MS": str(int(REFRESH_S * 1000)),
    "GATEWAY__MODEL__TIMEOUT_MS": str(int(MODEL_TIMEOUT_S * 1000)),
}
# Distinct rows of the 120,000-row dataset, one per use, so no test sees another's cache.
_ROWS = random.Random().sample(range(120_000), 200)


def fresh_id() -> str:
    return f"cust-{_ROWS.pop():06d}"


def cache_status(response: requests.Response) -> tuple[str, dict]:
    """The gateway's `Cache-Status` member: its cache identifier and parameters (RFC 9211)."""
    members = http_sfv.List()
    members.parse(response.headers["cache-status"].encode())
    [member] = list(members)
    return str(member.value), dict(member.params)


def status_params(response: requests.Response) -> dict:
    identifier, params = cache_status(response)
    assert identifier == GATEWAY_SERVICE
    return params


def predict(gateway: Gateway, data_id: str, cache_control: str | None = None) -> requests.Response:
    return gateway.predict(data_id, headers={"cache-control": cache_control} if cache_control else None)


def batch(gateway: Gateway, data_ids: list[str], cache_control: str | None = None) -> requests.Response:
    headers = {"cache-control": cache_control} if cache_control else {}
    return requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": data_ids}, headers=headers, timeout=30)


def documents(search_url: str, alias: str, data_id: str | None = None) -> list[dict]:
    """The documents in `alias` (of `data_id` if given), as the search node holds them."""
    requests.post(f"{search_url}/{alias}/_refresh", timeout=10).raise_for_status()
    query = {"term": {"data_id": data_id}} if data_id else {"match_all": {}}
    response = requests.post(f"{search_url}/{alias}/_search", json={"query": query, "size": 1000}, timeout=10)
    response.raise_for_status()
    return response.json()["hits"]["hits"]


def calls(model: RunningModelService) -> tuple[int, int]:
    """(`POST /predict`, `POST /predict/batch`) requests the model service received."""
    stats = model.stats()
    return stats["predict_requests"], stats["batch_requests"]


@dataclass
class Stack:
    model: RunningModelService
    gateway: Gateway
    search_url: str


@pytest.fixture(scope="module")
def stack(bed_dir: Path, search_node: SearchNode, collector: Collector) -> Iterator[Stack]:
    work_dir = bed_dir / "cache-controls"
    model = start_model_service(VENV_BIN, work_dir)
    gateway = Gateway.start(
        work_dir, model.url, store_url=search_node.url, collector=collector, index_alias=ALIAS, extra_env=GATEWAY_ENV
    )
    poll_until(gateway.ready, "gateway readiness (search node and model service up)")
    yield Stack(model, gateway, search_node.url)
    gateway.stop()
    model.stop()


@dataclass
class Runs:
    """Two model folders whose newest versions share a label but not a run."""

    first_dir: Path
    second_dir: Path


@pytest.fixture(scope="module")
def runs(bed_dir: Path) -> Runs:
    # Each folder starts from the session's trained v1 and trains its own v2: two real
    # training runs under the same label, as a retrain in place or a CI tagging alike gives.
    first_dir, second_dir = bed_dir / "cache-run-a", bed_dir / "cache-run-b"
    train_another_version(VENV_BIN, first_dir)
    train_another_version(VENV_BIN, second_dir)
    return Runs(first_dir, second_dir)


def serve(work_dir: Path, name: str) -> RunningModelService:
    """The model service of `work_dir`, serving its newest version."""
    return start_model_service(VENV_BIN, work_dir, name=name)


def retrain_in_place(model: RunningModelService, version: str, trained: Path) -> dict:
    """Replaces `version`'s artifact under `model` with the one `trained` holds (another
    run, same label) and makes the service load it again; the model it then serves."""
    folder = model.model_dir / version
    shutil.rmtree(folder)
    shutil.copytree(trained / "model-service" / "models" / version, folder)
    return model.switch_model(version)


def test_a_retrained_model_under_the_same_label_never_answers_with_the_old_runs_predictions(
    runs: Runs, bed_dir: Path, search_node: SearchNode
) -> None:
    alias, work_dir = "gw-retrain", bed_dir / "cache-retrain"
    # A copy: the retrain below replaces an artifact, and the purge test needs both runs.
    shutil.copytree(runs.first_dir / "model-service", work_dir / "model-service")
    model = serve(work_dir, "model-retrained")
    gateway = Gateway.start(work_dir, model.url, store_url=search_node.url, index_alias=alias, extra_env=GATEWAY_ENV)
    second_gateway = None
    try:
        old_model = model.model()
        ids = [fresh_id() for _ in range(4)]
        stored = [predict(gateway, data_id) for data_id in ids]
        assert [r.json()["model"]["run_id"] for r in stored] == [old_model["run_id"]] * 4
        assert predict(gateway, ids[0]).json()["cache"] == "hit"

        new_model = retrain_in_place(model, old_model["version"], runs.second_dir)
        switched_at = time.monotonic()
        assert new_model["version"] == old_model["version"]
        assert new_model["run_id"] != old_model["run_id"]

        # The running gateway: the old run's prediction stops being served within one refresh
        # interval plus one GET /model (bounded by the model timeout), whatever is asked.
        poll_until(lambda: gateway.stored(ids[3]).status_code == 404, "the gateway to learn the new run", timeout=15)
        window = time.monotonic() - switched_at
        # A gateway that learns the new run first never serves the old run's documents.
        second_gateway = Gateway.start(
            work_dir, model.url, store_url=search_node.url, index_alias=alias, name="gateway-new-run"
        )
        from_second = [predict(second_gateway, data_id) for data_id in ids[:2]]
        after = [predict(gateway, data_id) for data_id in ids]
        after_batch = batch(gateway, ids)
    finally:
        for process in (second_gateway, gateway, model):
            if process is not None:
                process.stop()

    answers = [r.json() for r in from_second + after] + after_batch.json()["predictions"]
    assert [a["model"]["run_id"] for a in answers].count(old_model["run_id"]) == 0
    assert {a["model"]["run_id"] for a in answers} == {new_model["run_id"]}
    assert [r.json()["cache"] for r in from_second] == ["miss", "miss"]
    assert window <= REFRESH_S + MODEL_TIMEOUT_S + 1.0, f"old run served {window:.1f} s after the switch"
    runs_stored = {d["_source"]["model"]["run_id"] for d in documents(search_node.url, alias, ids[0])}
    assert runs_stored == {old_model["run_id"], new_model["run_id"]}, "both runs' predictions side by side"


def test_no_cache_makes_exactly_one_model_call_and_overwrites_the_document(stack: Stack) -> None:
    data_id, batch_ids = fresh_id(), [fresh_id(), fresh_id()]
    predict(stack.gateway, data_id)
    batch(stack.gateway, batch_ids)
    [before] = documents(stack.search_url, ALIAS, data_id)
    calls_before = calls(stack.model)

    single = predict(stack.gateway, data_id, "no-cache")
    calls_after_single = calls(stack.model)
    batched = batch(stack.gateway, batch_ids, "No-Cache")
    calls_after_batch = calls(stack.model)

    assert single.status_code == 200, single.text
    assert single.json()["cache"] == "miss"
    assert status_params(single) == {"fwd": "request", "stored": True}
    assert calls_after_single == (calls_before[0] + 1, calls_before[1])
    [after] = documents(stack.search_url, ALIAS, data_id)
    assert after["_id"] == before["_id"]
    assert after["_source"]["created_at"] != before["_source"]["created_at"]
    assert after["_source"]["trace"]["id"] == single.json()["trace_id"]
    assert batched.status_code == 200, batched.text
    assert status_params(batched) == {"fwd": "request", "stored": True}
    assert [p["cache"] for p in batched.json()["predictions"]] == ["miss", "miss"]
    assert calls_after_batch == (calls_after_single[0], calls_after_single[1] + 1)
    for data_id in batch_ids:
        [document] = documents(stack.search_url, ALIAS, data_id)
        assert document["_source"]["trace"]["id"] == batched.json()["trace_id"]


def test_no_store_answers_without_changing_the_index(stack: Stack) -> None:
    data_id, batch_ids = fresh_id(), [fresh_id(), fresh_id()]
    index_before = documents(stack.search_url, ALIAS)

    single = predict(stack.gateway, data_id, "no-store")
    batched = batch(stack.gateway, batch_ids, "no-store")
    # A write made after them: once it shows, any write of theirs (on the request or
    # queued behind it) would show too.
    marker = fresh_id()
    assert predict(stack.gateway, marker).status_code == 200
    poll_until(lambda: documents(stack.search_url, ALIAS, marker), "the later prediction's document")

    assert single.status_code == 200, single.text
    assert single.json()["cache"] == "miss"
    assert status_params(single) == {"fwd": "miss", "stored": False}
    assert batched.status_code == 200, batched.text
    assert status_params(batched) == {"fwd": "miss", "stored": False}
    index_after = [hit for hit in documents(stack.search_url, ALIAS) if hit["_source"]["data_id"] != marker]
    assert index_after == index_before


def backdate(search_url: str, data_id: str, age: timedelta) -> None:
    """Makes the stored prediction of `data_id` look computed `age` ago."""
    [document] = documents(search_url, ALIAS, data_id)
    source = {**document["_source"], "created_at": (datetime.now(UTC) - age).isoformat()}
    response = requests.put(
        f"{search_url}/{document['_index']}/_doc/{document['_id']}", params={"refresh": "true"}, json=source, timeout=10
    )
    response.raise_for_status()


def test_max_age_treats_an_older_document_as_a_stale_miss(stack: Stack) -> None:
    data_id, batch_ids = fresh_id(), [fresh_id(), fresh_id()]
    # Stored by a batch: batches are not coalesced, so no finished computation of these ids
    # lingers in the gateway's memory with its true (young) age while the documents are aged.
    batch(stack.gateway, [data_id, *batch_ids])
    young = predict(stack.gateway, data_id, "max-age=600")
    young_batch = batch(stack.gateway, batch_ids, "max-age=600")
    for stored_id in [data_id, *batch_ids]:
        backdate(stack.search_url, stored_id, timedelta(hours=1))
    calls_before = calls(stack.model)

    old = predict(stack.gateway, data_id, "max-age=600")
    old_batch = batch(stack.gateway, batch_ids, "max-age=600")

    assert status_params(young) == {"hit": True}
    assert status_params(young_batch) == {"hit": True}
    assert old.status_code == 200, old.text
    assert old.json()["cache"] == "miss"
    assert status_params(old) == {"fwd": "stale", "stored": True}
    assert status_params(old_batch) == {"fwd": "stale", "stored": True}
    assert calls(stack.model) == (calls_before[0] + 1, calls_before[1] + 1)
    for stored_id in [data_id, *batch_ids]:
        [document] = documents(stack.search_url, ALIAS, stored_id)
        created_at = datetime.fromisoformat(document["_source"]["created_at"])
        assert created_at > datetime.now(UTC) - timedelta(minutes=5), f"{stored_id}: the stale document stays"


def test_only_if_cached_never_calls_the_model_and_answers_504_for_a_missing_id(stack: Stack) -> None:
    stored_id, missing_id = fresh_id(), fresh_id()
    predict(stack.gateway, stored_id)
    calls_before = calls(stack.model)

    hit = predict(stack.gateway, stored_id, "only-if-cached")
    missing = predict(stack.gateway, missing_id, "only-if-cached")
    partial = batch(stack.gateway, [stored_id, missing_id], "only-if-cached")
    none_stored = batch(stack.gateway, [missing_id], "only-if-cached")

    assert calls(stack.model) == calls_before
    assert hit.status_code == 200, hit.text
    assert status_params(hit) == {"hit": True}
    assert missing.status_code == 504, missing.text
    assert missing.json()["error"]["code"] == "not_cached"
    assert status_params(missing) == {"detail": "not-cached"}
    assert partial.status_code == 200, partial.text
    assert [p["data_id"] for p in partial.json()["predictions"]] == [stored_id]
    assert [(e["data_id"], e["code"]) for e in partial.json()["errors"]] == [(missing_id, "not_cached")]
    assert none_stored.status_code == 504, none_stored.text
    assert documents(stack.search_url, ALIAS, missing_id) == []


def test_the_server_span_and_the_cache_counter_say_which_directive_applied(stack: Stack, collector: Collector) -> None:
    trace_id = secrets.token_hex(16)
    header = f"00-{trace_id}-{secrets.token_hex(8)}-01"

    response = stack.gateway.predict(fresh_id(), headers={"traceparent": header, "cache-control": "no-cache"})

    assert response.status_code == 200, response.text
    spans = collector.wait_for_spans(
        lambda spans: [s for s in spans if s.trace_id == trace_id and s.name == "POST /v1/predict"],
        f"the server span of trace {trace_id}",
    )
    [server] = [s for s in spans if s.trace_id == trace_id and s.name == "POST /v1/predict"]
    assert server.attributes["ml.cache.directive"] == "no-cache"

    def counted() -> list[dict]:
        return [
            otlp_json.attributes(point.get("attributes", []))
            for metric in collector.metrics()
            if metric.service_name == GATEWAY_SERVICE and metric.name == "ml.cache.results"
            for point in metric.data_points
        ]

    points = poll_until(
        lambda: [p for p in counted() if p.get("ml.cache.directive") == "no-cache"] and counted(),
        "ml.cache.results counted under ml.cache.directive=no-cache",
    )
    assert all(set(point) == {"ml.cache.result", "ml.cache.directive"} for point in points), points


def run_counts(search_url: str, alias: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for document in documents(search_url, alias):
        run_id = document["_source"]["model"]["run_id"]
        counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def test_purge_deletes_exactly_the_predictions_of_runs_not_kept(
    runs: Runs, bed_dir: Path, search_node: SearchNode
) -> None:
    alias = "gw-purge"
    first = serve(runs.first_dir, "model-purge-a")
    second = serve(runs.second_dir, "model-purge-b")
    gateway = Gateway.start(
        bed_dir / "cache-run-a", first.url, store_url=search_node.url, index_alias=alias, extra_env=GATEWAY_ENV
    )
    second_gateway = Gateway.start(
        bed_dir / "cache-run-b", second.url, store_url=search_node.url, index_alias=alias, name="gateway-purge-b"
    )
    try:
        # Three runs, oldest first: the shared v1, the first folder's v2, the second's v2.
        oldest = first.switch_model("v1")
        probe = fresh_id()
        poll_until(
            lambda: gateway.stored(probe).status_code == 404 and live_run(gateway) == oldest["run_id"],
            "the gateway to serve v1",
        )
        batch(gateway, [fresh_id(), fresh_id()])
        middle = first.switch_model()
        poll_until(lambda: live_run(gateway) == middle["run_id"], "the gateway to serve the first v2")
        batch(gateway, [fresh_id(), fresh_id()])
        newest = second.model()
        batch(second_gateway, [fresh_id(), fresh_id()])
        before = run_counts(search_node.url, alias)

        purged = subprocess.run(
            [gateway_binary(), "purge", "--keep", "1"],
            env={
                "PATH": "/usr/bin:/bin",
                "GATEWAY__STORE__URL": search_node.url,
                "GATEWAY__STORE__INDEX_ALIAS": alias,
                "GATEWAY__MODEL__URL": second.url,
                **NO_TELEMETRY_ENV,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for process in (second_gateway, gateway, second, first):
            process.stop()

    assert before == {oldest["run_id"]: 2, middle["run_id"]: 2, newest["run_id"]: 2}
    assert purged.returncode == 0, purged.stderr + purged.stdout
    summary = json.loads(purged.stdout.strip().splitlines()[-1])
    assert summary == {
        "live_run_id": newest["run_id"],
        "kept_run_ids": [newest["run_id"], middle["run_id"]],
        "deleted": 2,
    }
    assert run_counts(search_node.url, alias) == {middle["run_id"]: 2, newest["run_id"]: 2}


def live_run(gateway: Gateway) -> str:
    """The run id the gateway serves, as its readiness check reports it."""
    return requests.get(f"{gateway.url}/readyz", timeout=10).json()["checks"]["model"]["live_model"]["run_id"]
