"""What the fault cases share besides fixtures: new data ids, signalling a program's process
group, killing a model service and starting it again on the same port, warming ids."""

from __future__ import annotations

import contextlib
import os
import random
import signal

import requests

from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.polling import poll_until
from harness.process import ManagedProcess

ALIAS = "gw-faults"
_ROWS_IN_DATASET = 120_000
# Every id the module uses, each once: no case sees another's stored predictions.
_ROWS = random.Random().sample(range(_ROWS_IN_DATASET), 6_000)


def fresh_ids(count: int) -> list[str]:
    """`count` data ids of the dataset that no other case of this run has used."""
    return [f"cust-{_ROWS.pop():06d}" for _ in range(count)]


def signal_group(process: ManagedProcess, sig: signal.Signals) -> None:
    """Signal a program's whole process group (SIGSTOP/SIGCONT/SIGKILL reach its children too)."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def kill_and_start_again(service: RunningModelService, timeout: float = 60.0) -> RunningModelService:
    """SIGKILL a model service, then start the same command on the same port; the new one,
    once `/health` answers 200. (A new `start_model_service` would pick another port.)"""
    kill(service.process)
    return start_again(service)


def kill(process: ManagedProcess) -> None:
    signal_group(process, signal.SIGKILL)
    process.wait(timeout=30)
    process.stop()


def start_again(service: RunningModelService, timeout: float = 60.0) -> RunningModelService:
    old = service.process
    process = ManagedProcess(old.name, old.argv, env=old.env, log_dir=old.log_path.parent).start()
    process.wait_until_ready(
        lambda: requests.get(f"{service.url}/health", timeout=2).status_code == 200,
        f"{old.name} at {service.url} to answer /health again",
        timeout=timeout,
    )
    return RunningModelService(process, service.url, service.model_dir, service.data_dir)


def warm(gateway: Gateway, data_ids: list[str]) -> None:
    """Compute and store `data_ids` through the gateway; returns once each reads back as stored."""
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


def model_calls(model: RunningModelService) -> int:
    return model.stats()["predict_requests"]
