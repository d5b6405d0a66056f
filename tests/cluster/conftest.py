"""Fixtures of the cluster module: a three-node search cluster of its own (its cases kill
nodes), one model service, gateway replicas started per test on the cluster's node list and
stopped after it, and the figures each case prints."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.cluster_bed import ALIAS, GREEN_TIMEOUT_SECONDS
from faults.fault_bed import MODEL_SERVICE_ENV
from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service
from harness.provisioning import provisioned
from harness.search_cluster import SearchCluster

_FIGURES: list[str] = []


@pytest.fixture(scope="package")
def cluster_dir(bed_dir: Path) -> Path:
    return bed_dir / "cluster"


@pytest.fixture(scope="package")
def venv_bin() -> Path:
    return Path(sys.executable).parent


@pytest.fixture(scope="package")
def search_cluster(cluster_dir: Path) -> Iterator[SearchCluster]:
    """Three search nodes of this module alone, formed into one cluster; its cases kill nodes."""
    cluster = SearchCluster.start(provisioned("provision-search-node.sh"), cluster_dir)
    _FIGURES.append(f"[cluster] 3 nodes started and green in {cluster.started_in:.1f}s (cold: new data folders)")
    print(_FIGURES[-1])
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def green_cluster(search_cluster: SearchCluster) -> SearchCluster:
    """The module's cluster with every node running and every shard assigned, whatever the
    case before left behind (a node it killed and could not start again)."""
    for node in search_cluster.nodes:
        if not node.process.is_running():
            node.start_again()
    search_cluster.wait_until_green(GREEN_TIMEOUT_SECONDS)
    return search_cluster


@pytest.fixture(scope="package")
def model(venv_bin: Path, cluster_dir: Path) -> Iterator[RunningModelService]:
    """The model service every replica of the module calls (injected faults reset per case)."""
    service = start_model_service(venv_bin, cluster_dir, extra_env=MODEL_SERVICE_ENV, name="model-service-cluster")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def healthy_model(model: RunningModelService) -> Iterator[RunningModelService]:
    """The shared model service with injection off before and after the case."""
    model.set_faults()
    try:
        yield model
    finally:
        model.set_faults()


@pytest.fixture
def replicas(
    cluster_dir: Path, green_cluster: SearchCluster, healthy_model: RunningModelService
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateway replicas on the cluster's node list (`Gateway.start` keyword arguments;
    `store_url` replaces the list) calling the shared model, and stops every one after the case."""
    started: list[Gateway] = []

    def start(**kwargs: object) -> Gateway:
        kwargs.setdefault("store_url", green_cluster.url_list)
        kwargs.setdefault("index_alias", ALIAS)
        gateway = Gateway.start(cluster_dir, healthy_model.url, **kwargs)
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            gateway.stop()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Prints a figure line and keeps it for the run's summary ("cluster module figures")."""

    def report(line: str) -> None:
        text = f"[{request.node.name}] {line}"
        print(text)
        _FIGURES.append(text)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("cluster module figures (latencies reported, not asserted)")
        for line in _FIGURES:
            terminalreporter.write_line(line)
