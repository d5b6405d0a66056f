"""Clients that hang up never cancel shared work: a half-open trial call dropped by its
client still reports to the circuit breaker (which then closes by itself once the model
heals), and a model call whose requesters all hung up still stores its prediction, so
the next request is a hit. Settings that would let a request deadline cut a model call
short are refused at start-up."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from faults.fault_bed import fresh_ids, milliseconds, model_calls
from faults.fault_load import Answer, post_predict
from harness.collector import NO_TELEMETRY_ENV
from harness.gateway import Gateway, gateway_binary
from harness.model_service import RunningModelService
from harness.process import ManagedProcess

MODEL_TIMEOUT_MS = 1_000
COOL_DOWN_MS = 1_000
# The model's latency while "slow": past the model timeout, so every call fails.
SLOW_MS = 1_500
# Polling resolution and one request's own time on a busy two-core machine.
SLACK_SECONDS = 0.5


def predict(url: str, data_id: str, timeout: float) -> Answer:
    with requests.Session() as session:
        return post_predict(session, url, data_id, "miss", timeout)


def test_a_trial_call_whose_client_hung_up_never_leaves_the_breaker_refusing_calls(
    healthy_model: RunningModelService,
    gateways: Callable[..., Gateway],
    figures: Callable[[str], None],
) -> None:
    # The embedded store: the time to close the breaker is not to include a busy node's writes.
    gateway = gateways(
        healthy_model.url,
        name="gateway-cancelled-trial",
        extra_env={
            "GATEWAY__MODEL__TIMEOUT_MS": str(MODEL_TIMEOUT_MS),
            "GATEWAY__MODEL__BREAKER_THRESHOLD": "2",
            "GATEWAY__MODEL__BREAKER_COOL_DOWN_MS": str(COOL_DOWN_MS),
        },
    )
    healthy_model.set_faults(latency_ms=SLOW_MS)
    with ThreadPoolExecutor(max_workers=2) as pool:
        timed_out = list(pool.map(lambda data_id: predict(gateway.url, data_id, 10), fresh_ids(2)))
    refused = predict(gateway.url, fresh_ids(1)[0], 10)
    opened_at = time.monotonic()
    assert [a.status for a in timed_out] == [504, 504], [a.brief() for a in timed_out]
    assert (refused.status, refused.code) == (503, "model_unavailable"), f"breaker open: {refused.brief()}"

    # Wait out the cool-down (a request now would itself be the trial call).
    time.sleep(max(0.0, opened_at + COOL_DOWN_MS / 1000 + 0.1 - time.monotonic()))
    trial = predict(gateway.url, fresh_ids(1)[0], 0.5)
    hung_up_at = time.monotonic()
    healthy_model.set_faults()
    first_success = None
    while first_success is None and time.monotonic() - hung_up_at < 10:
        answer = predict(gateway.url, fresh_ids(1)[0], 10)
        if answer.status == 200:
            first_success = answer.done - hung_up_at
        else:
            time.sleep(0.05)

    figures(f"first miss answered 200 {milliseconds(first_success)} after the trial call's client hung up")
    assert trial.status is None, f"the trial call was admitted (slow) and its client hung up: {trial.brief()}"
    assert first_success is not None, "misses still refused 10 s after the cancelled trial call and the heal"
    # The trial's own outcome is known within the model timeout; then at most one cool-down.
    bound = (MODEL_TIMEOUT_MS + COOL_DOWN_MS) / 1000 + SLACK_SECONDS
    assert first_success <= bound, f"breaker closed {first_success:.2f}s after the hang-up (bound {bound:.1f}s)"


def test_a_model_call_whose_clients_all_hung_up_is_stored_and_the_next_request_is_a_hit(
    healthy_model: RunningModelService, node_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    gateway = node_gateways(healthy_model.url, name="gateway-hang-ups")
    [data_id] = fresh_ids(1)
    healthy_model.set_faults(latency_ms=SLOW_MS)
    calls_before = model_calls(healthy_model)

    with ThreadPoolExecutor(max_workers=3) as pool:
        impatient = list(pool.map(lambda _: predict(gateway.url, data_id, 1.0), range(3)))
    hung_up_at = time.monotonic()
    stored_after = None
    while stored_after is None and time.monotonic() - hung_up_at < 10:
        if requests.get(f"{gateway.url}/v1/predictions/{data_id}", timeout=10).status_code == 200:
            stored_after = time.monotonic() - hung_up_at
        else:
            time.sleep(0.1)
    patient = predict(gateway.url, data_id, 10)
    calls = model_calls(healthy_model) - calls_before

    figures(f"prediction stored {milliseconds(stored_after)} after three clients hung up; {calls} model call(s)")
    assert [a.status for a in impatient] == [None] * 3, [a.brief() for a in impatient]
    assert stored_after is not None, "the prediction was not stored after all three clients hung up"
    assert (patient.status, patient.cache) == (200, "hit"), patient.brief()
    assert calls == 1, f"{calls} model calls for one id"


def test_a_model_timeout_not_shorter_than_the_request_deadline_is_refused_at_start_up(fault_dir: Path) -> None:
    process = ManagedProcess(
        "gateway-bad-timeouts",
        [gateway_binary()],
        env={
            **NO_TELEMETRY_ENV,
            "GATEWAY__SERVER__PORT": "0",
            "GATEWAY__MODEL__URL": "http://127.0.0.1:9",
            "GATEWAY__MODEL__TIMEOUT_MS": "3000",
            "GATEWAY__SERVER__REQUEST_TIMEOUT_MS": "3000",
        },
        log_dir=fault_dir / "logs",
    ).start()
    try:
        exit_code: int | None = process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        exit_code = None
    finally:
        process.stop()

    assert exit_code is not None, "the gateway started serving although a request deadline could cut model calls"
    assert exit_code != 0
    log = process.log_text()
    assert "GATEWAY__MODEL__TIMEOUT_MS" in log, log[-2000:]
    assert "GATEWAY__SERVER__REQUEST_TIMEOUT_MS" in log, log[-2000:]
