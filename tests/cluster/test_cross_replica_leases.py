"""Concurrent misses for one key across gateway replicas cost one model call, coordinated by
a lease document in the store; the lease of a replica that died mid-computation expires and
another replica takes the computation over."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from faults.fault_bed import fresh_ids, kill, model_calls
from faults.fault_load import latency_line
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.polling import poll_until

CONCURRENT_REQUESTS = 50
# Model latency that makes the 50 requests overlap the one computation.
OVERLAP_LATENCY_MS = 1000
# The takeover case: the lease outlives the model timeout, which outlives the latency.
TAKEOVER_LATENCY_MS = 2000
TAKEOVER_MODEL_TIMEOUT_MS = 2500
TAKEOVER_LEASE_TTL_MS = 3000
# What the takeover may take on top of the lease's expiry and one model call: the waiting
# replica's polling, a store refresh and a busy bed.
TAKEOVER_MARGIN_SECONDS = 3.0


def the_prediction(response: requests.Response) -> str:
    """What must be the same in every answer for one id: the prediction and who computed it
    when (as canonical JSON, so answers can be compared in a set)."""
    body = response.json()
    return json.dumps([body.get("prediction"), body.get("model"), body.get("created_at")], sort_keys=True)


def test_fifty_concurrent_requests_for_one_new_id_over_three_replicas_cost_one_model_call(
    replicas: Callable[..., Gateway], healthy_model: RunningModelService, figures: Callable[[str], None]
) -> None:
    # Arrange: three replicas, a model slow enough that every request arrives while it computes.
    gateways = [replicas(name=f"gateway-lease-{n}") for n in range(3)]
    healthy_model.set_faults(latency_ms=OVERLAP_LATENCY_MS)
    [data_id] = fresh_ids(1)
    calls_before = model_calls(healthy_model)
    start_together = threading.Barrier(CONCURRENT_REQUESTS)

    def ask(number: int) -> tuple[requests.Response, float]:
        start_together.wait(timeout=30)
        sent = time.monotonic()
        response = gateways[number % len(gateways)].predict(data_id)
        return response, time.monotonic() - sent

    # Act
    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        results = list(pool.map(ask, range(CONCURRENT_REQUESTS)))
    calls = model_calls(healthy_model) - calls_before

    # Assert
    statuses = [response.status_code for response, _ in results]
    predictions = {the_prediction(response) for response, _ in results if response.status_code == 200}
    caches = [response.json().get("cache") for response, _ in results if response.status_code == 200]
    figures(latency_line(f"{CONCURRENT_REQUESTS} requests for one id over 3 replicas", [s for _, s in results]))
    figures(
        f"model calls {calls}; statuses {sorted(set(statuses))}; distinct predictions {len(predictions)}; "
        f"cache results { {cache: caches.count(cache) for cache in set(caches)} }"
    )
    assert statuses == [200] * CONCURRENT_REQUESTS, f"statuses: {statuses}"
    assert len(predictions) == 1, f"{len(predictions)} different predictions for one id: {predictions}"
    assert calls == 1, f"{calls} model calls for {CONCURRENT_REQUESTS} concurrent requests of one id"


def test_the_lease_of_a_replica_killed_mid_computation_is_taken_over_within_its_expiry(
    replicas: Callable[..., Gateway], healthy_model: RunningModelService, figures: Callable[[str], None]
) -> None:
    # Arrange: two replicas whose leases expire after TAKEOVER_LEASE_TTL_MS; a model that
    # takes TAKEOVER_LATENCY_MS, so replica A is killed while it computes.
    lease_env = {
        "GATEWAY__STORE__LEASE_TTL_MS": str(TAKEOVER_LEASE_TTL_MS),
        "GATEWAY__MODEL__TIMEOUT_MS": str(TAKEOVER_MODEL_TIMEOUT_MS),
    }
    replica_a = replicas(name="gateway-lease-holder", extra_env=lease_env)
    replica_b = replicas(name="gateway-lease-taker", extra_env=lease_env)
    healthy_model.set_faults(latency_ms=TAKEOVER_LATENCY_MS)
    [data_id] = fresh_ids(1)
    calls_before = model_calls(healthy_model)
    computing = threading.Thread(target=_ask_ignoring_errors, args=(replica_a, data_id), daemon=True)
    computing.start()
    poll_until(lambda: model_calls(healthy_model) > calls_before, "replica A to call the model", timeout=15)
    a_called_at = time.monotonic()

    # Act: SIGKILL A mid-computation, then ask B for the same id.
    kill(replica_a.process)
    killed_at = time.monotonic()
    response = replica_b.predict(data_id)
    answered_at = time.monotonic()
    computing.join(timeout=30)

    # Assert
    bound = TAKEOVER_LEASE_TTL_MS / 1000 + TAKEOVER_LATENCY_MS / 1000 + TAKEOVER_MARGIN_SECONDS
    calls = model_calls(healthy_model) - calls_before
    stored = replica_b.stored(data_id)
    figures(
        f"B answered {response.status_code} {response.json().get('cache')} {answered_at - killed_at:.2f}s after A "
        f"was killed ({answered_at - a_called_at:.2f}s after A called the model; bound {bound:.1f}s); "
        f"model calls {calls}; stored read {stored.status_code}"
    )
    assert response.status_code == 200, response.text
    assert answered_at - killed_at <= bound, f"B answered {answered_at - killed_at:.2f}s after the kill"
    assert calls == 2, f"{calls} model calls: A's, then B's once A's lease expired"
    assert stored.status_code == 200, f"B's prediction is not stored: {stored.text}"


def _ask_ignoring_errors(gateway: Gateway, data_id: str) -> None:
    """A request whose gateway is killed under it: no answer is expected."""
    with contextlib.suppress(requests.RequestException):
        gateway.predict(data_id)
