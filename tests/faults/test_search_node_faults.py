"""The search node fails under a steady mixed load: SIGKILLed and started again on the same
data, or frozen (SIGSTOP) past the store timeout and thawed. Every request still gets a
2xx answer (from the model, `cache: bypass`, while the store is gone) and no prediction
answered during the outage is lost: each is in the node afterwards, written by the trace
that computed it (the write-behind queue drained on recovery)."""

from __future__ import annotations

import time
from collections.abc import Callable

from faults.fault_bed import freeze_for, fresh_ids, wait_until_nothing_lost, warm
from faults.fault_load import HIT, MISS, Answer, MixedLoad, latency_line
from harness.gateway import Gateway
from harness.search_node import SearchNode

# Answers wanted before the fault, during it and after recovery: enough to see each phase.
PHASE_ANSWERS = 40
# How long the write-behind queue gets to drain once the node is back (its backoff tops at 5 s).
DRAIN_SECONDS = 45
FREEZE_SECONDS = 3.0
STORE_TIMEOUT_MS = 300


def new_load(gateway: Gateway, hit_ids: list[str]) -> MixedLoad:
    # 4 clients, a request each 0.4 s plus its latency: ~10 requests/s, a few hundred per case (more
    # would slow the JVM restart on two shared cores).
    return MixedLoad(gateway.url, hit_ids, fresh_ids(1500), threads=4, pause=0.4, max_requests=1200, max_seconds=150)


def report_phases(figures: Callable[[str], None], answers: list[Answer], fault_at: float, recovered_at: float) -> None:
    phases = {
        "before": [a for a in answers if a.sent < fault_at],
        "during": [a for a in answers if fault_at <= a.sent < recovered_at],
        "after": [a for a in answers if a.sent >= recovered_at],
    }
    for phase, chosen in phases.items():
        for expected in (HIT, MISS):
            seconds = [a.seconds for a in chosen if a.expected == expected]
            figures(latency_line(f"{phase} the fault, {expected} ids", seconds))
    caches = {cache: sum(1 for a in phases["during"] if a.cache == cache) for cache in ("hit", "miss", "bypass")}
    figures(f"during the fault: answers by cache result {caches}; outage {recovered_at - fault_at:.1f}s")


def assert_the_fault_cost_nothing(
    figures: Callable[[str], None],
    gateway: Gateway,
    node: SearchNode,
    answers: list[Answer],
    fault_at: float,
    recovered_at: float,
    fault: str,
) -> None:
    """What both faults must cost nothing of: every request answered 2xx, during the `fault`
    from the model (`bypass`), and every new prediction in the node once the queue drained."""
    lost = wait_until_nothing_lost(node.url, answers, timeout=DRAIN_SECONDS)
    report_phases(figures, answers, fault_at, recovered_at)
    failed = [a.brief() for a in answers if a.status is None or not 200 <= a.status < 300]
    assert failed == [], f"{len(failed)} of {len(answers)} requests not answered 2xx: {failed[:10]}"
    during = [a for a in answers if fault_at <= a.sent < recovered_at]
    assert any(a.cache == "bypass" for a in during), f"the {fault} was seen: answered from the model"
    given_up = gateway.process.log_text().count("write-behind gave up")
    assert [a.brief() for a in lost] == [], (
        f"{len(lost)} predictions answered but not in the node after the {fault} "
        f"({recovered_at - fault_at:.0f}s; the gateway logged {given_up} writes given up)"
    )
    figures(f"{len(answers)} requests, 0 non-2xx, 0 of {sum(a.expected == MISS for a in answers)} new predictions lost")


def test_the_search_node_killed_and_restarted_on_its_data_costs_no_answer_and_no_prediction(
    fault_node: SearchNode, shared_model_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    gateway = shared_model_gateways(name="gateway-node-killed")
    hit_ids = warm(gateway, 30)

    with new_load(gateway, hit_ids) as load:
        load.wait_for(PHASE_ANSWERS, lambda a: True, "before the kill", timeout=60)
        killed_at = time.monotonic()
        fault_node.kill()
        load.wait_for(PHASE_ANSWERS, lambda a: a.sent > killed_at, "while the node is down", timeout=60)
        fault_node.start_again()
        back_at = time.monotonic()
        load.wait_for(PHASE_ANSWERS, lambda a: a.sent > back_at, "after the restart", timeout=60)
    assert_the_fault_cost_nothing(figures, gateway, fault_node, load.answers(), killed_at, back_at, "outage")


def test_the_search_node_frozen_past_the_store_timeout_costs_no_answer_and_no_prediction(
    fault_node: SearchNode, shared_model_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    gateway = shared_model_gateways(
        name="gateway-node-frozen", extra_env={"GATEWAY__STORE__TIMEOUT_MS": str(STORE_TIMEOUT_MS)}
    )
    hit_ids = warm(gateway, 30)

    with new_load(gateway, hit_ids) as load:
        load.wait_for(PHASE_ANSWERS, lambda a: True, "before the freeze", timeout=60)
        # Frozen for 10 store timeouts: the load runs on until an answer is sent after that.
        frozen_at = freeze_for(load, FREEZE_SECONDS, fault_node.freeze, fault_node.thaw)
        thawed_at = time.monotonic()
        load.wait_for(PHASE_ANSWERS, lambda a: a.sent > thawed_at, "after the thaw", timeout=60)
    assert_the_fault_cost_nothing(figures, gateway, fault_node, load.answers(), frozen_at, thawed_at, "freeze")
