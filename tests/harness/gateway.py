"""The real gateway binary on the test bed: built once per session with cargo,
started on a free loopback port in front of a model service, a search node and a
collector of the test's choosing."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import requests

from harness.collector import NO_TELEMETRY_ENV, Collector, otel_env
from harness.ports import free_port
from harness.process import ManagedProcess
from harness.provisioning import REPO_ROOT


@functools.cache
def gateway_binary() -> Path:
    """Builds the gateway (debug, incremental) and returns the executable cargo reports."""
    output = subprocess.run(
        ["cargo", "build", "--quiet", "-p", "gateway", "--bin", "gateway", "--message-format=json"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    for line in output.splitlines():
        message = json.loads(line)
        is_binary = message.get("reason") == "compiler-artifact" and message.get("executable")
        if is_binary and message["target"]["name"] == "gateway":
            return Path(message["executable"])
    raise RuntimeError("cargo did not report the gateway executable")


class Gateway:
    """A running gateway; `url` is its base URL."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(
        cls,
        work_dir: Path,
        model_url: str,
        store_url: str | None = None,
        collector: Collector | None = None,
        index_alias: str | None = None,
        extra_env: dict[str, str] | None = None,
        name: str = "gateway",
        timeout: float = 60.0,
    ) -> Gateway:
        """Starts the gateway and returns once `/healthz` answers.

        Without `store_url` it uses its embedded in-memory store; without `collector`
        it exports no telemetry.
        """
        port = free_port()
        env = {
            "GATEWAY__SERVER__PORT": str(port),
            "GATEWAY__MODEL__URL": model_url,
            "RUST_LOG": "info",
            # No load balancer sits in front of a test gateway: stop without the drain delay
            # (tests of the shutdown stages set it themselves).
            "GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS": "0",
        }
        if store_url:
            env["GATEWAY__STORE__URL"] = store_url
        if index_alias:
            env["GATEWAY__STORE__INDEX_ALIAS"] = index_alias
        if collector is not None:
            env.update(otel_env(collector, "inference-gateway"))
        else:
            env.update(NO_TELEMETRY_ENV)
        env.update(extra_env or {})
        process = ManagedProcess(name, [gateway_binary()], env=env, log_dir=work_dir / "logs").start()
        url = f"http://127.0.0.1:{port}"

        process.wait_until_ready(
            lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200,
            f"{name} at {url} to answer /healthz",
            timeout=timeout,
        )
        return cls(process, url)

    def predict(self, data_id: str, headers: dict[str, str] | None = None) -> requests.Response:
        """`POST /v1/predict`."""
        return requests.post(f"{self.url}/v1/predict", json={"data_id": data_id}, headers=headers, timeout=30)

    def stored(self, data_id: str) -> requests.Response:
        """`GET /v1/predictions/{data_id}`."""
        return requests.get(f"{self.url}/v1/predictions/{data_id}", timeout=30)

    def ready(self) -> bool:
        """Whether `/readyz` answers 200."""
        return requests.get(f"{self.url}/readyz", timeout=10).status_code == 200

    def stop(self) -> int | None:
        return self.process.stop()
