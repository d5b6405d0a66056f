"""Slow and idle clients cannot hold the gateway's connections: a request head dribbled one
byte every 2 s is closed by the header-read timeout, an idle connection and an idle
keep-alive connection by the idle timeout, and 1,100 idle sockets against a gateway with
1,024 file descriptors do not stop it answering."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from faults.fault_bed import fresh_ids, milliseconds, seconds_until_closed
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.polling import poll_until

HEADER_READ_TIMEOUT_MS = 1_000
IDLE_TIMEOUT_MS = 2_000
DRIBBLE_SECONDS = 2.0
# Timers fire on a busy two-core machine: the bound each close is checked against.
SLACK_SECONDS = 1.5
IDLE_SOCKETS = 1_100
OPEN_FILES_LIMIT = 1_024
TIMEOUT_ENV = {
    "GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS": str(HEADER_READ_TIMEOUT_MS),
    "GATEWAY__SERVER__IDLE_TIMEOUT_MS": str(IDLE_TIMEOUT_MS),
}


@pytest.fixture
def timed_gateway(healthy_model: RunningModelService, gateways: Callable[..., Gateway]) -> Gateway:
    return gateways(healthy_model.url, name="gateway-client-timeouts", extra_env=TIMEOUT_ENV)


def connect(gateway: Gateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_request_head_dribbled_a_byte_every_2_s_is_closed_by_the_header_read_timeout(
    timed_gateway: Gateway, figures: Callable[[str], None]
) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    closed_after = None
    with connect(timed_gateway) as sock:
        started = time.monotonic()
        # Five bytes at most (10 s): the head is far longer, so it never completes.
        for byte in head[:5]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            if seconds_until_closed(sock, DRIBBLE_SECONDS) is not None:
                closed_after = time.monotonic() - started
                break

    figures(
        f"dribbled head closed after {milliseconds(closed_after)} (header-read timeout {HEADER_READ_TIMEOUT_MS} ms)"
    )
    assert closed_after is not None, "still open after 5 bytes in 10 s"
    assert closed_after <= HEADER_READ_TIMEOUT_MS / 1000 + DRIBBLE_SECONDS + SLACK_SECONDS


def test_an_idle_connection_is_closed_by_the_idle_timeout(
    timed_gateway: Gateway, figures: Callable[[str], None]
) -> None:
    bound = max(HEADER_READ_TIMEOUT_MS, IDLE_TIMEOUT_MS) / 1000 + SLACK_SECONDS
    with connect(timed_gateway) as sock:
        closed_after = seconds_until_closed(sock, bound + 5)

    figures(f"idle connection closed after {milliseconds(closed_after)} (idle timeout {IDLE_TIMEOUT_MS} ms)")
    assert closed_after is not None, f"still open after {bound + 5:.1f}s"
    assert closed_after <= bound


def test_an_idle_keep_alive_connection_is_closed_by_the_idle_timeout(
    timed_gateway: Gateway, figures: Callable[[str], None]
) -> None:
    bound = IDLE_TIMEOUT_MS / 1000 + SLACK_SECONDS
    with connect(timed_gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        length = int(next(v for k, v in _headers(head) if k == b"content-length"))
        while len(body) < length:
            body += sock.recv(65536)
        closed_after = seconds_until_closed(sock, bound + 5)

    figures(f"idle keep-alive connection closed after {milliseconds(closed_after)} (idle timeout {IDLE_TIMEOUT_MS} ms)")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert closed_after is not None, f"still open after {bound + 5:.1f}s"
    assert closed_after <= bound


def _headers(head: bytes) -> Iterator[tuple[bytes, bytes]]:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        yield name.strip().lower(), value.strip()


@pytest.fixture
def open_files_for_the_test() -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE raised for 1,100 sockets (restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_SOCKETS + 512
    if soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"hard open-files limit {hard} < {needed}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle_sockets(url: str, count: int, timeout: float) -> tuple[list[socket.socket], int]:
    """`count` TCP connections to `url` that send nothing, and how many completed the handshake.

    Opened 50 at a time, each batch awaited (non-blocking connects, polled): a burst of
    1,100 SYNs would overflow the listen queue and leave connects waiting on SYN retries.
    """
    host, port = url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    connected = 0
    deadline = time.monotonic() + timeout
    while len(sockets) < count and time.monotonic() < deadline:
        batch = []
        for _ in range(min(50, count - len(sockets))):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, int(port)))
            batch.append(sock)
        sockets += batch
        poller = select.poll()
        pending = {sock.fileno(): sock for sock in batch}
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                poller.unregister(fd)
                sock = pending.pop(fd)
                connected += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return sockets, connected


def closed_by_peer(sockets: list[socket.socket]) -> int:
    poller = select.poll()
    for sock in sockets:
        poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return len(poller.poll(0))


def test_1100_idle_sockets_against_1024_file_descriptors_do_not_stop_the_gateway_answering(
    open_files_for_the_test: None,
    healthy_model: RunningModelService,
    gateways: Callable[..., Gateway],
    figures: Callable[[str], None],
) -> None:
    gateway = gateways(healthy_model.url, name="gateway-1024-fds", open_files_limit=OPEN_FILES_LIMIT)
    [data_id] = fresh_ids(1)
    assert gateway.predict(data_id).status_code == 200

    sockets, connected = open_idle_sockets(gateway.url, IDLE_SOCKETS, timeout=30)
    try:
        started = time.monotonic()
        try:
            poll_until(
                lambda: requests.get(f"{gateway.url}/healthz", timeout=2).status_code == 200,
                "/healthz to answer with 1,100 idle sockets open",
                timeout=10,
            )
            healthz_after: float | None = time.monotonic() - started
        except TimeoutError:
            healthz_after = None
        predict_started = time.monotonic()
        try:
            predicted = requests.post(f"{gateway.url}/v1/predict", json={"data_id": data_id}, timeout=5)
            predict_status: int | None = predicted.status_code
        except requests.RequestException:
            predict_status = None
        predict_seconds = time.monotonic() - predict_started
        evicted = closed_by_peer(sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    figures(
        f"{connected} idle sockets connected; /healthz answered after {milliseconds(healthz_after)}; "
        f"a hit answered {predict_status} in {milliseconds(predict_seconds)}; "
        f"{evicted} idle sockets closed by the gateway"
    )
    assert connected == IDLE_SOCKETS, f"only {connected} of {IDLE_SOCKETS} sockets connected"
    assert healthz_after is not None, "/healthz did not answer within 10 s"
    assert predict_status == 200, "a stored prediction is served"
    assert evicted >= 1, "the cap made room by closing idle connections"
