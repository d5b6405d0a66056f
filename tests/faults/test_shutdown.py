"""SIGTERM to the gateway, as an orchestrator sends it: under a steady load with writes
queued (the store frozen a moment), `/readyz` turns 503 at once, requests keep being
served through the drain delay, the process exits 0 within drain + grace having answered
every request sent before the drain ended and written every queued prediction. A client
holding a half-sent request head cannot keep it alive past the grace period."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import requests

from faults.fault_bed import fresh_ids, lost_predictions, milliseconds, seconds_until_closed, warm
from faults.fault_load import MISS, MixedLoad, latency_line
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.search_node import SearchNode

DRAIN_MS = 1_000
GRACE_MS = 3_000
STORE_TIMEOUT_MS = 300
# A request sent this close to the end of the drain may meet the listener closing: not counted.
EDGE_SECONDS = 0.1


def shutdown_env(drain_ms: int, grace_ms: int) -> dict[str, str]:
    return {
        "GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS": str(drain_ms),
        "GATEWAY__SERVER__SHUTDOWN_GRACE_MS": str(grace_ms),
    }


def readyz_statuses(url: str, since: float, seconds: float) -> list[tuple[float, float, int | None]]:
    """`/readyz` asked again and again until `seconds` after `since` (a new connection each
    time): (asked, answered) in seconds since `since`, and the status (None: no answer)."""
    statuses: list[tuple[float, float, int | None]] = []
    while time.monotonic() - since < seconds:
        asked = time.monotonic() - since
        try:
            status: int | None = requests.get(f"{url}/readyz", timeout=1).status_code
        except requests.RequestException:
            status = None
        statuses.append((asked, time.monotonic() - since, status))
        time.sleep(0.02)
    return statuses


def test_sigterm_under_load_answers_every_request_of_the_drain_and_loses_no_queued_write(
    fault_node: SearchNode, shared_model_gateways: Callable[..., Gateway], figures: Callable[[str], None]
) -> None:
    gateway = shared_model_gateways(
        name="gateway-sigterm-load",
        extra_env={**shutdown_env(DRAIN_MS, GRACE_MS), "GATEWAY__STORE__TIMEOUT_MS": str(STORE_TIMEOUT_MS)},
    )
    hit_ids = warm(gateway, 30)

    load = MixedLoad(gateway.url, hit_ids, fresh_ids(1500), threads=6, pause=0.02, max_requests=1500, max_seconds=60)
    with load:
        load.wait_for(40, lambda a: True, "before the store freeze", timeout=60)
        frozen_at = time.monotonic()
        fault_node.freeze()
        try:
            # Misses answered now could not be written: they wait in the write-behind queue.
            load.wait_for(6, lambda a: a.expected == MISS and a.sent > frozen_at, "misses while frozen", timeout=30)
            term_at = time.monotonic()
            gateway.send_signal(signal.SIGTERM)
        finally:
            # Thawed at once: from here a 503 from /readyz is the shutdown's, not the store's.
            fault_node.thaw()
        readyz = readyz_statuses(gateway.url, since=term_at, seconds=DRAIN_MS / 1000 - 0.2)
        try:
            exit_code = gateway.wait(timeout=(DRAIN_MS + GRACE_MS) / 1000 + 15)
        finally:
            exited_at = time.monotonic()
    answers = load.answers()
    lost = lost_predictions(fault_node.url, answers)

    drain_end = term_at + DRAIN_MS / 1000
    before_drain_end = [a for a in answers if a.sent < drain_end - EDGE_SECONDS]
    during_drain = [a for a in answers if term_at + EDGE_SECONDS < a.sent < drain_end - EDGE_SECONDS]
    unanswered = [a.brief() for a in before_drain_end if a.status is None]
    first_503 = next((asked for asked, _, status in readyz if status == 503), None)
    asks = ", ".join(
        f"{status} asked {asked * 1000:.0f} ms answered {answered * 1000:.0f} ms"
        for asked, answered, status in readyz[:2]
    )
    figures(
        f"/readyz after SIGTERM: {asks}; exit {exit_code} after "
        f"{milliseconds(exited_at - term_at)} (drain {DRAIN_MS} + grace {GRACE_MS} ms)"
    )
    figures(latency_line("requests sent during the drain", [a.seconds for a in during_drain if a.status is not None]))
    figures(
        f"{len(before_drain_end)} requests sent before the drain ended, {len(unanswered)} unanswered; "
        f"{sum(a.sent >= drain_end for a in answers)} sent later; {len(lost)} predictions lost"
    )

    assert first_503 is not None, f"/readyz never answered 503 in the drain: {readyz}"
    assert first_503 <= 0.5, f"/readyz answered 503 at once: {readyz}"
    assert {status for asked, _, status in readyz if asked >= first_503} == {503}, f"and stayed 503: {readyz}"
    assert exit_code == 0, gateway.process.log_text()[-3000:]
    assert exited_at - term_at <= (DRAIN_MS + GRACE_MS) / 1000, "exit within drain + grace"
    assert unanswered == [], f"requests sent before the drain ended got no answer: {unanswered[:10]}"
    assert [a.brief() for a in before_drain_end if a.status != 200] == [], "served normally until the drain ended"
    assert during_drain, "the load ran through the drain"
    assert all(a.connection == "close" for a in during_drain), "drain responses carry Connection: close"
    assert [a.brief() for a in lost] == [], "every queued write reached the store"


def test_sigterm_with_a_half_sent_request_head_exits_0_within_the_grace_period(
    healthy_model: RunningModelService,
    gateways: Callable[..., Gateway],
    figures: Callable[[str], None],
) -> None:
    drain_ms, grace_ms = 500, 1_500
    gateway = gateways(
        healthy_model.url,
        name="gateway-sigterm-half-head",
        extra_env={
            **shutdown_env(drain_ms, grace_ms),
            # Long enough that only the grace period can end this connection.
            "GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS": "60000",
            "GATEWAY__SERVER__IDLE_TIMEOUT_MS": "60000",
        },
    )
    host, port = gateway.url.removeprefix("http://").split(":")

    with socket.create_connection((host, int(port)), timeout=5) as held:
        held.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
        term_at = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        closed_after = seconds_until_closed(held, timeout=(drain_ms + grace_ms) / 1000 + 10)
        try:
            exit_code = gateway.wait(timeout=10)
        finally:
            exited_at = time.monotonic()

    figures(
        f"held connection closed after {milliseconds(closed_after)}; exit {exit_code} after "
        f"{milliseconds(exited_at - term_at)} (drain {drain_ms} + grace {grace_ms} ms)"
    )
    assert closed_after is not None, "the gateway closed the half-sent request's connection"
    assert exit_code == 0, gateway.process.log_text()[-3000:]
    # Closing the last connections and flushing (no collector here) take a moment past the grace.
    assert exited_at - term_at <= (drain_ms + grace_ms) / 1000 + 1.0, "exit within drain + grace"
