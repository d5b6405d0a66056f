"""What the fault cases share besides fixtures: new data ids, signalling a program's process
group, killing a model service and starting it again on the same port, warming ids, freezing
a program under load, and reading back from the search node which answered predictions it holds."""

from __future__ import annotations

import contextlib
import copy
import os
import random
import signal
import socket
import time
from collections.abc import Callable

import requests

from faults.fault_load import MISS, Answer, MixedLoad
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.polling import poll_until
from harness.process import ManagedProcess
from harness.provisioning import REPO_ROOT

ALIAS = "gw-faults"
# The model service of this checkout. The bed's venv installs the package in development
# mode from whichever clone or worktree provisioned it last; PYTHONPATH comes first.
MODEL_SERVICE_ENV = {"PYTHONPATH": str(REPO_ROOT / "model-service")}
_ROWS_IN_DATASET = 120_000
# Every id the module uses, each once: no case sees another's stored predictions.
_ROWS = random.Random().sample(range(_ROWS_IN_DATASET), 20_000)


def fresh_ids(count: int) -> list[str]:
    """`count` data ids of the dataset that no other case of this run has used."""
    return [f"cust-{_ROWS.pop():06d}" for _ in range(count)]


def signal_group(process: ManagedProcess, sig: signal.Signals) -> None:
    """Signal a program's whole process group (SIGSTOP/SIGCONT/SIGKILL reach its children too)."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def kill(process: ManagedProcess) -> None:
    """SIGKILL a program's process group (a crash: nothing flushed) and reap it."""
    signal_group(process, signal.SIGKILL)
    process.wait(timeout=30)
    process.stop()


def start_again(service: RunningModelService, timeout: float = 60.0) -> RunningModelService:
    """The killed model service's command started again, on the same port (a new
    `start_model_service` would pick another); returns once `/health` answers 200."""
    old = service.process
    process = ManagedProcess(old.name, old.argv, env=old.env, log_dir=old.log_path.parent).start()
    process.wait_until_ready(
        lambda: requests.get(f"{service.url}/health", timeout=2).status_code == 200,
        f"{old.name} at {service.url} to answer /health again",
        timeout=timeout,
    )
    # A copy keeps whatever else the handle carries (URL, folders, credentials).
    restarted = copy.copy(service)
    restarted.process = process
    return restarted


def warm(gateway: Gateway, count: int) -> list[str]:
    """`count` new ids computed and stored through the gateway; returns them once each reads back as stored."""
    data_ids = fresh_ids(count)
    with requests.Session() as session:
        for data_id in data_ids:
            response = session.post(f"{gateway.url}/v1/predict", json={"data_id": data_id}, timeout=30)
            assert response.status_code == 200, response.text
        poll_until(
            lambda: all(
                session.get(f"{gateway.url}/v1/predictions/{data_id}", timeout=10).status_code == 200
                for data_id in data_ids
            ),
            f"{len(data_ids)} warmed predictions to read back as stored",
            timeout=30,
        )
    return data_ids


def freeze_for(load: MixedLoad, seconds: float, freeze: Callable[[], None], thaw: Callable[[], None]) -> float:
    """`freeze()`, the load kept running until an answer is sent `seconds` after it, then `thaw()`
    (also when the wait fails, so no frozen program outlives the test); when the freeze began."""
    frozen_at = time.monotonic()
    freeze()
    try:
        load.wait_for(1, lambda a: a.sent > frozen_at + seconds, "after the freeze span", timeout=30)
    finally:
        thaw()
    return frozen_at


def model_calls(model: RunningModelService) -> int:
    return model.stats()["predict_requests"]


def stored_trace_ids(search_url: str, data_ids: list[str], alias: str = ALIAS) -> dict[str, set[str]]:
    """The computing trace ids of the predictions the search node holds for `data_ids` under
    `alias` (read from the node itself, not through a gateway), after a refresh makes every
    write visible."""
    requests.post(f"{search_url}/{alias}/_refresh", timeout=30).raise_for_status()
    found: dict[str, set[str]] = {}
    for start in range(0, len(data_ids), 500):
        chunk = data_ids[start : start + 500]
        response = requests.post(
            f"{search_url}/{alias}/_search",
            json={"query": {"terms": {"data_id": chunk}}, "size": 10 * len(chunk), "_source": ["data_id", "trace"]},
            timeout=30,
        )
        response.raise_for_status()
        for hit in response.json()["hits"]["hits"]:
            found.setdefault(hit["_source"]["data_id"], set()).add(hit["_source"]["trace"]["id"])
    return found


def lost_predictions(search_url: str, answers: list[Answer], alias: str = ALIAS) -> list[Answer]:
    """The new ids answered 200 whose prediction, as computed by the answering request's trace,
    the search node does not hold (under `alias`)."""
    computed = [a for a in answers if a.expected == MISS and a.status == 200]
    stored = stored_trace_ids(search_url, [a.data_id for a in computed], alias)
    return [a for a in computed if a.trace_id not in stored.get(a.data_id, set())]


def wait_until_nothing_lost(search_url: str, answers: list[Answer], timeout: float, alias: str = ALIAS) -> list[Answer]:
    """`lost_predictions` once the write-behind queue had `timeout` seconds to drain (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        lost = lost_predictions(search_url, answers, alias)
        if not lost or time.monotonic() > deadline:
            return lost
        time.sleep(0.5)


def seconds_until_closed(sock: socket.socket, timeout: float) -> float | None:
    """Read (and discard) until the peer closes the connection; the seconds it took, or None
    if it was still open after `timeout`."""
    started = time.monotonic()
    while (left := started + timeout - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        except TimeoutError:
            return None
    return None


def milliseconds(seconds: float | None) -> str:
    """`1234 ms`, or `never` for a wait that timed out."""
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"
