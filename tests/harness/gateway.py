"""The real gateway binary on the test bed: built once per session with cargo,
started on port 0 (it prints the address it bound) in front of a model service, a
search node and a collector of the test's choosing; signalled as an orchestrator would."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
from pathlib import Path

import requests

from harness.collector import NO_TELEMETRY_ENV, Collector, otel_env
from harness.process import ManagedProcess
from harness.provisioning import REPO_ROOT

# The stable line `main.rs` prints once the listener is bound, for scripts and this harness.
_LISTENING = re.compile(r"gateway listening on (http://\S+)")


@functools.cache
def gateway_binary(release: bool = False) -> Path:
    """Builds the gateway (debug and incremental, or `release` for measurements) and returns
    the executable cargo reports."""
    profile = ["--release", "--locked"] if release else []
    output = subprocess.run(
        ["cargo", "build", *profile, "--quiet", "-p", "gateway", "--bin", "gateway", "--message-format=json"],
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
        open_files_limit: int | None = None,
        binary: Path | None = None,
    ) -> Gateway:
        """Starts the gateway and returns once `/healthz` answers.

        Without `store_url` it uses its embedded in-memory store; without `collector`
        it exports no telemetry. `open_files_limit` sets RLIMIT_NOFILE (soft and hard)
        for the gateway alone: `prlimit` sets it on itself and then execs the binary,
        so the process the harness signals is the gateway. `binary` replaces the debug
        build (the benchmark runs `gateway_binary(release=True)`).
        """
        env = {
            # The kernel picks the port; the gateway prints what it bound.
            "GATEWAY__SERVER__PORT": "0",
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
        argv: list[str | Path] = [binary or gateway_binary()]
        if open_files_limit is not None:
            argv = ["prlimit", f"--nofile={open_files_limit}:{open_files_limit}", "--", *argv]
        process = ManagedProcess(name, argv, env=env, log_dir=work_dir / "logs").start()
        url = process.wait_for_line(
            _listening_url,
            f"{name} to print the address it listens on",
            timeout=timeout,
        )
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

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the gateway process (SIGTERM as an orchestrator sends it)."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the gateway to exit; its exit code (`subprocess.TimeoutExpired` if it does not)."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> int | None:
        return self.process.stop()


def _listening_url(line: str) -> str | None:
    match = _LISTENING.fullmatch(line)
    return match[1] if match else None
