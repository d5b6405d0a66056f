"""The model service fails under a steady mixed load: SIGKILLed and started again on its
port, or frozen (SIGSTOP) past the model timeout. Stored predictions keep being served;
misses fail with a JSON error (503 `model_unavailable` with `Retry-After` once the circuit
breaker is open, fast); the breaker closes by itself once the model is back. A batch
serves its stored predictions while the model is down and lists the rest as errors."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from faults.fault_bed import MODEL_SERVICE_ENV, freeze_for, fresh_ids, kill, signal_group, start_again, warm
from faults.fault_load import HIT, MISS, Answer, MixedLoad, latency_line
from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service

COOL_DOWN_MS = 1_000
BREAKER_THRESHOLD = 5
MODEL_TIMEOUT_MS = 500
OUTAGE_SECONDS = 3.0
BREAKER_ENV = {
    "GATEWAY__MODEL__BREAKER_COOL_DOWN_MS": str(COOL_DOWN_MS),
    "GATEWAY__MODEL__BREAKER_THRESHOLD": str(BREAKER_THRESHOLD),
}


class OwnModel:
    """A model service of one test (it is killed): `service` is whichever process runs now."""

    def __init__(self, service: RunningModelService) -> None:
        self.service = service


_own_models = itertools.count(1)


@pytest.fixture
def own_model(venv_bin: Path, fault_dir: Path) -> Iterator[OwnModel]:
    name = f"model-service-own-{next(_own_models)}"
    box = OwnModel(start_model_service(venv_bin, fault_dir, extra_env=MODEL_SERVICE_ENV, name=name))
    try:
        yield box
    finally:
        box.service.stop()


def new_load(gateway: Gateway, hit_ids: list[str]) -> MixedLoad:
    return MixedLoad(gateway.url, hit_ids, fresh_ids(1500), threads=4, pause=0.05, max_requests=1500, max_seconds=90)


def describe(answers: list[Answer]) -> list[str]:
    return [a.brief() for a in answers][:10]


def wait_for_misses_answered(load: MixedLoad, since: float, description: str) -> None:
    """The model is back since `since`: 20 misses sent after it answered 200 (the breaker closed)."""
    load.wait_for(
        20,
        lambda a: a.expected == MISS and a.sent > since and a.status == 200,
        f"misses answered 200 {description}",
        timeout=20,
    )


def assert_every_hit_served(hits: list[Answer]) -> None:
    served = [a for a in hits if a.status == 200 and a.cache == "hit"]
    assert len(served) == len(hits), f"hits not served: {describe([a for a in hits if a not in served])}"


def test_a_killed_model_service_costs_no_hit_and_misses_fail_fast_until_it_returns(
    own_model: OwnModel, node_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    model = own_model.service
    gateway = node_gateways(model.url, name="gateway-model-killed", extra_env=BREAKER_ENV)
    hit_ids = warm(gateway, 30)

    with new_load(gateway, hit_ids) as load:
        load.wait_for(40, lambda a: True, "before the kill", timeout=60)
        kill(model.process)
        # After the process is reaped: a miss sent while the kill was on its way is
        # answered by the model, rightly.
        killed_at = time.monotonic()
        load.wait_for(1, lambda a: a.sent > killed_at + OUTAGE_SECONDS, "after the outage span", timeout=30)
        # The restarted model may answer a breaker trial before the harness sees `/health`:
        # the outage is what ended before the restart began.
        restarting_at = time.monotonic()
        own_model.service = start_again(model)
        back_at = time.monotonic()
        wait_for_misses_answered(load, back_at, "after the model returned")
    answers = load.answers()

    hits = [a for a in answers if a.expected == HIT]
    outage_misses = sorted(
        (a for a in answers if a.expected == MISS and a.sent >= killed_at and a.done < restarting_at),
        key=lambda a: a.done,
    )
    # Once `threshold` calls failed the breaker is open: misses sent after that are refused fast.
    opened_at = outage_misses[BREAKER_THRESHOLD - 1].done if len(outage_misses) >= BREAKER_THRESHOLD else back_at
    refused = [a for a in outage_misses if a.sent > opened_at]
    answered_after_return = [a for a in answers if a.expected == MISS and a.status == 200 and a.done > back_at]
    closed_after = min(a.done for a in answered_after_return) - back_at
    figures(latency_line("hits, whole run", [a.seconds for a in hits]))
    figures(latency_line("misses refused while the breaker is open", [a.seconds for a in refused]))
    figures(f"misses refused within 50 ms: {sum(a.seconds <= 0.05 for a in refused)} of {len(refused)}")
    figures(f"breaker closed {closed_after * 1000:.0f} ms after the model answered /health again")

    assert_every_hit_served(hits)
    assert len(refused) >= 10, f"the load saw the open breaker ({len(refused)} misses refused)"
    wrong = [a for a in outage_misses if (a.status, a.code) != (503, "model_unavailable") or not a.retry_after]
    assert wrong == [], f"misses not answered 503 model_unavailable with Retry-After: {describe(wrong)}"
    assert closed_after <= 2 * COOL_DOWN_MS / 1000, "closed again within 2 cool-downs of the model's return"
    after_close = [a for a in answers if a.expected == MISS and a.sent > back_at + closed_after]
    assert [a for a in after_close if a.status != 200] == [], "every miss after the breaker closed is answered"


def test_a_frozen_model_service_times_misses_out_with_a_json_error_and_costs_no_hit(
    healthy_model: RunningModelService, node_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    gateway = node_gateways(
        healthy_model.url,
        name="gateway-model-frozen",
        extra_env={**BREAKER_ENV, "GATEWAY__MODEL__TIMEOUT_MS": str(MODEL_TIMEOUT_MS)},
    )
    hit_ids = warm(gateway, 30)

    with new_load(gateway, hit_ids) as load:
        load.wait_for(40, lambda a: True, "before the freeze", timeout=60)
        frozen_at = freeze_for(
            load,
            OUTAGE_SECONDS,
            freeze=lambda: signal_group(healthy_model.process, signal.SIGSTOP),
            thaw=lambda: signal_group(healthy_model.process, signal.SIGCONT),
        )
        thawed_at = time.monotonic()
        wait_for_misses_answered(load, thawed_at, "after the thaw")
    answers = load.answers()

    hits = [a for a in answers if a.expected == HIT]
    frozen_misses = [a for a in answers if a.expected == MISS and a.sent >= frozen_at and a.done < thawed_at]
    timed_out = [a for a in frozen_misses if a.status == 504]
    refused = [a for a in frozen_misses if a.status == 503]
    figures(latency_line("hits, whole run", [a.seconds for a in hits]))
    figures(latency_line("misses answered 504 model_timeout while frozen", [a.seconds for a in timed_out]))
    figures(latency_line("misses answered 503 while frozen (breaker open)", [a.seconds for a in refused]))

    assert_every_hit_served(hits)
    assert timed_out, "the freeze was seen: some misses timed out"
    wrong = [
        a
        for a in frozen_misses
        if (a.status, a.code) not in ((504, "model_timeout"), (503, "model_unavailable"))
        or (a.status == 503 and not a.retry_after)
    ]
    assert wrong == [], f"not 504 model_timeout or 503 model_unavailable with Retry-After: {describe(wrong)}"


def test_a_batch_serves_its_stored_predictions_while_the_model_service_is_down(
    own_model: OwnModel, node_gateways: Callable[..., Gateway]
) -> None:
    gateway = node_gateways(own_model.service.url, name="gateway-batch")
    stored_ids, [new_id] = warm(gateway, 5), fresh_ids(1)
    kill(own_model.service.process)

    mixed = requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": [*stored_ids, new_id]}, timeout=30)
    only_new = requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": fresh_ids(2)}, timeout=30)

    assert mixed.status_code == 200, mixed.text
    body = mixed.json()
    assert [(p["data_id"], p["cache"]) for p in body["predictions"]] == [(i, "hit") for i in stored_ids]
    assert body["not_found"] == []
    [error] = body["errors"]
    assert (error["data_id"], error["code"]) == (new_id, "model_unavailable")
    assert error["message"]
    assert body["trace_id"]
    assert only_new.status_code == 503, only_new.text
    assert only_new.json()["error"]["code"] == "model_unavailable"
    assert only_new.headers.get("retry-after")
