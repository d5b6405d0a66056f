"""The store client on a cluster: a search node SIGKILLed under a steady mixed load through two
replicas, and a node in the list that never answers. Requests that are safe to repeat go to
another node, so clients see no error and (almost) no `bypass`, no prediction is lost, and a
dead node is tried again only after its back-off."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from cluster.cluster_bed import ALIAS, GREEN_TIMEOUT_SECONDS, failed, primary_holder
from faults.fault_bed import fresh_ids, wait_until_nothing_lost, warm
from faults.fault_load import HIT, MISS, MixedLoad, latency_line
from harness.gateway import Gateway
from harness.ports import free_port
from harness.search_cluster import SearchCluster

# Answers wanted before the kill, during the outage and after the cluster is green again.
PHASE_ANSWERS = 40
# Share of the requests sent during the outage that may be answered `bypass` (the store
# could not be used): a retry on another node should leave next to none.
MAX_BYPASS_SHARE = 0.01
# How long the write-behind queue gets to drain once the cluster is green.
DRAIN_SECONDS = 45
DEAD_NODE_BACKOFF_MS = 1000
MAX_DEAD_NODE_BACKOFF_MS = 4000
# Requests through a list with a dead node: long enough for several back-offs to expire.
DEAD_NODE_LOAD_SECONDS = 12.0
SILENT_STORE_TIMEOUT_MS = 500
# The gateway's warn line when a node it took for live fails (again after a back-off).
MARKED_DEAD = re.compile(
    r"(?P<at>\S+Z)\s+WARN .*store node marked dead .*server\.port=(?P<port>\d+) "
    r"consecutive_failures=(?P<failures>\d+) backoff_ms=(?P<backoff_ms>\d+)"
)


def marked_dead(log: str, port: int) -> list[tuple[datetime, int, int]]:
    """When the gateway marked the node on `port` dead: (time, consecutive failures, back-off ms)."""
    return [
        (datetime.fromisoformat(match["at"]), int(match["failures"]), int(match["backoff_ms"]))
        for match in MARKED_DEAD.finditer(log)
        if int(match["port"]) == port
    ]


def test_a_search_node_killed_under_load_through_two_replicas_costs_no_error_and_no_prediction(
    green_cluster: SearchCluster, replicas: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    # Arrange: two replicas, stored ids, every shard copy assigned before the kill.
    first, second = replicas(name="gateway-cluster-a"), replicas(name="gateway-cluster-b")
    hit_ids = warm(first, 30)
    green_cluster.wait_until_green(GREEN_TIMEOUT_SECONDS)
    victim = green_cluster.node(primary_holder(green_cluster))
    load = MixedLoad(
        [first.url, second.url], hit_ids, fresh_ids(3000), threads=4, pause=0.2, max_requests=3000, max_seconds=300
    )

    # Act: kill the primary's node under load, start it again, wait for green.
    with load:
        load.wait_for(PHASE_ANSWERS, lambda a: True, "before the kill", timeout=60)
        killed_at = time.monotonic()
        victim.kill()
        load.wait_for(PHASE_ANSWERS, lambda a: a.sent > killed_at, "while the node is down", timeout=60)
        restarted_at = time.monotonic()
        victim.start_again()
        green_in = green_cluster.wait_until_green(GREEN_TIMEOUT_SECONDS)
        green_at = time.monotonic()
        load.wait_for(PHASE_ANSWERS, lambda a: a.sent > green_at, "after the cluster is green", timeout=60)
    answers = load.answers()
    lost = wait_until_nothing_lost(green_cluster.any_url(), answers, timeout=DRAIN_SECONDS, alias=ALIAS)

    # Assert
    during = [a for a in answers if killed_at <= a.sent < green_at]
    bypassed = [a for a in during if a.cache == "bypass"]
    for expected in (HIT, MISS):
        figures(
            latency_line(f"during the outage, {expected} ids", [a.seconds for a in during if a.expected == expected])
        )
    figures(
        f"killed {victim.name} (primary); {len(answers)} requests, {len(failed(answers))} non-2xx, "
        f"{len(during)} during the outage of which {len(bypassed)} bypass "
        f"({100 * len(bypassed) / max(1, len(during)):.2f} %), {len(lost)} predictions lost; "
        f"node back and cluster green {green_at - killed_at:.1f}s after the kill "
        f"(restart to green {green_at - restarted_at:.1f}s, of which waiting for green {green_in:.1f}s)"
    )
    assert failed(answers) == [], f"{len(failed(answers))} of {len(answers)} requests not answered 2xx"
    assert len(bypassed) < MAX_BYPASS_SHARE * len(during), (
        f"{len(bypassed)} of {len(during)} requests during the outage answered without the store: "
        f"{[a.brief() for a in bypassed[:10]]}"
    )
    assert [a.brief() for a in lost] == [], f"{len(lost)} predictions answered but not in the cluster"


@pytest.fixture
def silent_socket() -> Iterator[int]:
    """A port whose kernel takes connections into a backlog that nothing accepts or answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("refused", id="a port with nothing listening (connection refused)"),
        pytest.param("silent", id="a socket that never answers (store timeout)"),
    ],
)
def test_a_node_in_the_list_that_never_answers_costs_no_request_and_is_retried_only_after_its_back_off(
    kind: str,
    green_cluster: SearchCluster,
    replicas: Callable[..., Gateway],
    silent_socket: int,
    figures: Callable[[str], None],
) -> None:
    # Arrange: the dead node second in the list, so round robin reaches it at once.
    dead_port = free_port() if kind == "refused" else silent_socket
    urls = [green_cluster.urls[0], f"http://127.0.0.1:{dead_port}", *green_cluster.urls[1:]]
    gateway = replicas(
        name=f"gateway-dead-node-{kind}",
        store_url=",".join(urls),
        extra_env={
            "GATEWAY__STORE__TIMEOUT_MS": str(SILENT_STORE_TIMEOUT_MS),
            "GATEWAY__STORE__DEAD_NODE_BACKOFF_MS": str(DEAD_NODE_BACKOFF_MS),
            "GATEWAY__STORE__MAX_DEAD_NODE_BACKOFF_MS": str(MAX_DEAD_NODE_BACKOFF_MS),
        },
    )
    hit_ids = warm(gateway, 20)
    load = MixedLoad(gateway.url, hit_ids, fresh_ids(2000), threads=4, pause=0.05, max_requests=2000, max_seconds=60)

    # Act: a steady load for a fixed span, several back-offs long.
    with load:
        load_from = time.monotonic()
        load.wait_for(1, lambda a: a.sent > load_from + DEAD_NODE_LOAD_SECONDS, "after the load span", timeout=60)
    answers = load.answers()
    deaths = marked_dead(gateway.process.log_text(), dead_port)

    # Assert: every try of the dead node after the first came once the back-off of the one
    # before had run out (the gateway marks it dead again, with the doubled back-off, each time).
    hits = [a for a in answers if a.expected == HIT]
    not_hit = [a.brief() for a in hits if a.cache != "hit"]
    bypassed = sum(a.cache == "bypass" for a in answers)
    gaps = [
        ((later - earlier).total_seconds() * 1000, backoff_ms)
        for (earlier, _, backoff_ms), (later, _, _) in zip(deaths, deaths[1:], strict=False)
    ]
    early = [f"{gap:.0f} ms after a {backoff_ms} ms back-off" for gap, backoff_ms in gaps if gap < backoff_ms]
    figures(latency_line(f"{kind} node in the list, all ids", [a.seconds for a in answers]))
    figures(
        f"{kind}: {len(answers)} requests, {len(failed(answers))} non-2xx, {bypassed} bypass, stored ids not "
        f"answered hit {len(not_hit)}; marked dead {len(deaths)} times (failures, back-off ms: "
        f"{[(failures, backoff) for _, failures, backoff in deaths]}), tried again after "
        f"{[round(gap) for gap, _ in gaps]} ms; ~{len(answers) // len(urls)} tries without a back-off"
    )
    assert failed(answers) == [], f"{len(failed(answers))} of {len(answers)} requests not answered 2xx"
    assert not_hit == [], f"stored ids not served from the store (a lookup not retried on another node): {not_hit[:10]}"
    assert len(deaths) >= 2, f"the dead node marked dead {len(deaths)} times: never tried again after its back-off"
    assert early == [], f"the dead node tried again before its back-off ran out: {early}"
