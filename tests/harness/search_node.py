"""The test bed's search node: OpenSearch 2.19 in a JVM (Maven Central artifacts),
speaking the Elasticsearch document API on a free loopback port. A node can be
killed and started again on the same data and ports, or frozen and thawed, for the
fault tests."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import requests

from harness.ports import free_port
from harness.process import ManagedProcess

# The single-source launcher every search node JVM runs (alone or as a cluster member).
LAUNCHER = Path(__file__).resolve().parent.parent / "bed" / "SearchNode.java"


class SearchNode:
    """A running node; `url` is its HTTP endpoint."""

    def __init__(
        self,
        process: ManagedProcess,
        url: str,
        argv: list[str] | None = None,
        log_dir: Path | None = None,
        timeout: float = 180.0,
    ) -> None:
        self.process = process
        self.url = url
        # What `start_again` runs: the same data folder and ports.
        self._argv = argv or process.argv
        self._log_dir = log_dir or process.log_path.parent
        self._timeout = timeout

    @classmethod
    def start(
        cls, classpath_file: Path, work_dir: Path, timeout: float = 180.0, name: str = "search-node"
    ) -> SearchNode:
        """A node with its data in `work_dir/<name>`, on two free ports; returns once healthy."""
        http_port, transport_port = free_port(), free_port()
        argv = [
            "java",
            "-Xms512m",
            "-Xmx1g",
            "-cp",
            classpath_file.read_text().strip(),
            str(LAUNCHER),
            str(work_dir / name),
            str(http_port),
            str(transport_port),
        ]
        url = f"http://127.0.0.1:{http_port}"
        node = cls(_launch(name, argv, work_dir / "logs"), url, argv, work_dir / "logs", timeout)
        node._wait_until_healthy()
        return node

    def kill(self) -> None:
        """SIGKILL the JVM (no shutdown hook, no flush): a crash, as an OOM killer would do it."""
        self.thaw()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stop()

    def start_again(self) -> None:
        """Start the node again on the same data folder and ports; returns once healthy."""
        assert not self.process.is_running(), "kill() or stop() the node first"
        self.process = _launch(self.process.name, self._argv, self._log_dir)
        self._wait_until_healthy()

    def restart_after_kill(self) -> None:
        """`kill()` then `start_again()`."""
        self.kill()
        self.start_again()

    def freeze(self) -> None:
        """SIGSTOP the node's process group: connections stay open, nothing answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze()` (harmless if not frozen)."""
        if self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        # A frozen JVM would sit on SIGTERM until the SIGKILL fallback.
        self.thaw()
        self.process.stop(timeout=30.0)

    def _wait_until_healthy(self) -> None:
        def healthy() -> bool:
            response = requests.get(
                f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}, timeout=5
            )
            return response.status_code == 200 and response.json()["status"] in ("yellow", "green")

        self.process.wait_until_ready(
            healthy, f"search node at {self.url} to report yellow or green health", timeout=self._timeout
        )


def _launch(name: str, argv: list[str], log_dir: Path) -> ManagedProcess:
    return ManagedProcess(name, argv, log_dir=log_dir).start()
