"""The test bed's search cluster: three (or `nodes`) OpenSearch JVMs on loopback, each its own
process on free ports, that find each other and form one cluster "test-bed"."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from harness.polling import poll_until
from harness.ports import free_port
from harness.process import ManagedProcess
from harness.search_node import LAUNCHER, SearchNode

# Three JVMs share two cores with the rest of the bed: a small heap each is plenty for the
# few thousand documents a test writes, and the first start of all three takes longest.
_HEAP = ["-Xms256m", "-Xmx512m"]
_START_TIMEOUT_SECONDS = 300.0


class ClusterNode(SearchNode):
    """One member of a `SearchCluster`: a `SearchNode` (kill, start_again, freeze, stop) that
    counts as healthy once it is back in a cluster of `size` nodes, not merely up."""

    def __init__(self, process: ManagedProcess, url: str, name: str, size: int, timeout: float) -> None:
        super().__init__(process, url, process.argv, process.log_path.parent, timeout)
        self.name = name
        self._size = size

    def _wait_until_healthy(self) -> None:
        self.process.wait_until_ready(
            lambda: _health(self.url, self._size, "yellow") is not None,
            f"{self.name} at {self.url} to be one of a {self._size}-node cluster again",
            timeout=self._timeout,
        )


class SearchCluster:
    """A running cluster: `nodes` (each killable and restartable on its data and ports), their
    HTTP `urls`, and `url_list`, the comma-separated form `GATEWAY__STORE__URL` takes.
    `started_in` is how many seconds the last (re)start of every node took to a green cluster."""

    def __init__(self, nodes: list[ClusterNode], started_in: float) -> None:
        self.nodes = nodes
        self.started_in = started_in

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        return ",".join(self.urls)

    @classmethod
    def start(
        cls,
        classpath_file: Path,
        work_dir: Path,
        nodes: int = 3,
        name: str = "search-cluster",
        timeout: float = _START_TIMEOUT_SECONDS,
    ) -> SearchCluster:
        """`nodes` JVMs, data in `work_dir/<name>-<n>`, started at once; returns when the cluster is green.

        Every node gets every node's transport address as a seed and every node's name as
        an initial cluster-manager node: any two of three can then elect a manager.
        """
        names = [f"{name}-{number}" for number in range(1, nodes + 1)]
        ports = [(free_port(), free_port()) for _ in names]
        seeds = ",".join(f"127.0.0.1:{transport}" for _, transport in ports)
        classpath = classpath_file.read_text().strip()
        members = []
        started = time.monotonic()
        for node_name, (http_port, transport_port) in zip(names, ports, strict=True):
            argv = ["java", *_HEAP, "-cp", classpath, str(LAUNCHER), str(work_dir / node_name)]
            argv += [str(http_port), str(transport_port), node_name, seeds, ",".join(names)]
            process = ManagedProcess(node_name, argv, log_dir=work_dir / "logs").start()
            members.append(ClusterNode(process, f"http://127.0.0.1:{http_port}", node_name, nodes, timeout))
        cluster = cls(members, 0.0)
        try:
            cluster.wait_until_green(timeout)
        except BaseException:
            cluster.stop()
            raise
        cluster.started_in = time.monotonic() - started
        return cluster

    def restart_all(self) -> float:
        """Stop every node (SIGTERM), start them all again on their data and ports at once; the
        seconds until the cluster is green again (a warm start: JVM files cached, cluster formed)."""
        for node in self.nodes:
            node.stop()
        started = time.monotonic()
        for node in self.nodes:
            node.process = ManagedProcess(node.process.name, node.process.argv, log_dir=node._log_dir).start()
        self.wait_until_green(_START_TIMEOUT_SECONDS)
        self.started_in = time.monotonic() - started
        return self.started_in

    def health(self, wait_for_status: str = "yellow") -> dict | None:
        """`_cluster/health` from the first running node that reports all the nodes, or None."""
        for node in self.running_nodes():
            try:
                found = _health(node.url, len(self.nodes), wait_for_status)
            except requests.RequestException:
                continue
            if found is not None:
                return found
        return None

    def wait_until_green(self, timeout: float) -> float:
        """Block until every node is in the cluster and every shard (replicas too) is assigned;
        the seconds it took. Fails at once with a node's log if one of the JVMs exits."""
        started = time.monotonic()

        def green() -> bool:
            for node in self.nodes:
                if not node.process.is_running():
                    raise RuntimeError(f"{node.name} exited:\n{node.process.log_text()[-4000:]}")
            return self.health("green") is not None

        _poll_failing_fast(green, f"a green {len(self.nodes)}-node cluster", timeout)
        return time.monotonic() - started

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process.is_running()]

    def any_url(self) -> str:
        """The URL of a running node (for reading the cluster directly)."""
        running = self.running_nodes()
        assert running, "no node of the cluster is running"
        return running[0].url

    def shard_nodes(self, index: str) -> dict[str, list[str]]:
        """For each started shard copy of `index` (an alias works): node name -> ["p"] or ["r"]."""
        response = requests.get(
            f"{self.any_url()}/_cat/shards/{index}", params={"format": "json", "h": "prirep,state,node"}, timeout=10
        )
        response.raise_for_status()
        holders: dict[str, list[str]] = {}
        for shard in response.json():
            if shard["state"] == "STARTED":
                holders.setdefault(shard["node"], []).append(shard["prirep"])
        return holders

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def stop(self) -> None:
        """Stop every node at once (each JVM's SIGTERM, SIGKILL after 30 s)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))


def _health(url: str, size: int, wait_for_status: str) -> dict | None:
    """The node's view of the cluster's health once it sees `size` nodes at `wait_for_status`
    or better; None while it does not (or has not joined a cluster yet)."""
    response = requests.get(
        f"{url}/_cluster/health",
        params={
            "wait_for_nodes": str(size),
            "wait_for_status": wait_for_status,
            "timeout": "1s",
            "cluster_manager_timeout": "1s",
        },
        timeout=5,
    )
    if response.status_code != 200:
        return None
    body = response.json()
    return body if not body.get("timed_out") and body.get("number_of_nodes") == size else None


def _poll_failing_fast(condition: Callable[[], bool], description: str, timeout: float) -> None:
    """`poll_until`, except that a RuntimeError from `condition` (a node exited) ends the wait at once."""
    failure: list[RuntimeError] = []

    def checked() -> bool:
        try:
            return condition()
        except RuntimeError as error:
            failure.append(error)
            return True

    poll_until(checked, description, timeout=timeout, interval=0.5)
    if failure:
        raise failure[0]
