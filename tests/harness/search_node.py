"""The test bed's search node: OpenSearch 2.19 in a JVM (Maven Central artifacts),
speaking the Elasticsearch document API on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import requests

from harness.ports import free_port
from harness.process import ManagedProcess

_LAUNCHER = Path(__file__).resolve().parent.parent / "bed" / "SearchNode.java"


class SearchNode:
    """A running node; `url` is its HTTP endpoint."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, classpath_file: Path, work_dir: Path, timeout: float = 180.0) -> SearchNode:
        http_port, transport_port = free_port(), free_port()
        process = ManagedProcess(
            "search-node",
            [
                "java",
                "-Xms512m",
                "-Xmx1g",
                "-cp",
                classpath_file.read_text().strip(),
                _LAUNCHER,
                work_dir / "search-node",
                http_port,
                transport_port,
            ],
            log_dir=work_dir / "logs",
        ).start()
        url = f"http://127.0.0.1:{http_port}"

        def healthy() -> bool:
            response = requests.get(
                f"{url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}, timeout=5
            )
            return response.status_code == 200 and response.json()["status"] in ("yellow", "green")

        process.wait_until_ready(healthy, f"search node at {url} to report yellow or green health", timeout=timeout)
        return cls(process, url)

    def stop(self) -> None:
        self.process.stop(timeout=30.0)
