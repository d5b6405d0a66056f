"""Fixtures of the cluster module: a three-node search cluster of its own (its cases kill
nodes), one model service, gateway replicas started per test on the cluster's node list and
stopped after it, and the figures each case prints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.cluster_bed import ALIAS, GREEN_TIMEOUT_SECONDS
from faults.fault_bed import MODEL_SERVICE_ENV
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.module_bed import Figures, faults_off, gateway_starter, module_model_service
from harness.provisioning import provisioned
from harness.search_cluster import SearchCluster

_FIGURES = Figures("cluster module figures (latencies reported, not asserted)")


@pytest.fixture(scope="package")
def cluster_dir(bed_dir: Path) -> Path:
    return bed_dir / "cluster"


@pytest.fixture(scope="package")
def search_cluster(cluster_dir: Path) -> Iterator[SearchCluster]:
    """Three search nodes of this module alone, formed into one cluster; its cases kill nodes."""
    cluster = SearchCluster.start(provisioned("provision-search-node.sh"), cluster_dir)
    _FIGURES.add(f"[cluster] 3 nodes started and green in {cluster.started_in:.1f}s (cold: new data folders)")
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
    with module_model_service(venv_bin, cluster_dir, MODEL_SERVICE_ENV, "model-service-cluster") as service:
        yield service


@pytest.fixture
def healthy_model(model: RunningModelService) -> Iterator[RunningModelService]:
    """The shared model service with injection off before and after the case."""
    with faults_off(model):
        yield model


@pytest.fixture
def replicas(
    cluster_dir: Path, green_cluster: SearchCluster, healthy_model: RunningModelService
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateway replicas on the cluster's node list (`Gateway.start` keyword arguments;
    `store_url` replaces the list) calling the shared model, and stops every one after the case."""
    with gateway_starter(cluster_dir, healthy_model.url, store_url=green_cluster.url_list, index_alias=ALIAS) as start:
        yield start


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Prints a figure line and keeps it for the run's summary ("cluster module figures")."""
    return _FIGURES.reporter(request)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _FIGURES.write_summary(terminalreporter)
