"""Fixtures of the fault module: its own search node (the cases kill and freeze it, so
not the session's shared one), a shared model service, gateways started per test (on that
node or the embedded store) and stopped after it, new data ids, and the latency figures
each case prints."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.fault_bed import ALIAS, MODEL_SERVICE_ENV, signal_group
from harness.gateway import Gateway
from harness.model_service import RunningModelService
from harness.module_bed import Figures, faults_off, gateway_starter, module_model_service
from harness.provisioning import provisioned
from harness.search_node import SearchNode

_FIGURES = Figures("fault module figures (latencies reported, not asserted)")


@pytest.fixture(scope="package")
def fault_dir(bed_dir: Path) -> Path:
    return bed_dir / "faults"


@pytest.fixture(scope="package")
def fault_node(fault_dir: Path) -> Iterator[SearchNode]:
    """A search node of this module alone, killed, restarted and frozen by its cases."""
    node = SearchNode.start(provisioned("provision-search-node.sh"), fault_dir, name="search-node-faults")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="package")
def model(venv_bin: Path, fault_dir: Path) -> Iterator[RunningModelService]:
    """The model service shared by the cases that only slow it down (faults reset after each)."""
    with module_model_service(venv_bin, fault_dir, MODEL_SERVICE_ENV, "model-service-faults") as service:
        yield service


@pytest.fixture
def healthy_model(model: RunningModelService) -> Iterator[RunningModelService]:
    """The shared model service with injection off before and after the test."""
    with faults_off(model):
        try:
            yield model
        finally:
            # A case may leave it frozen: thaw it first, or it cannot answer the reset.
            signal_group(model.process, signal.SIGCONT)


@pytest.fixture
def gateways(fault_dir: Path) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways (`Gateway.start` arguments, work folder given) and stops every one after the test."""
    with gateway_starter(fault_dir) as start:
        yield start


@pytest.fixture
def node_gateways(fault_node: SearchNode, gateways: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """`gateways` storing on the module's search node (under `ALIAS`)."""
    return functools.partial(gateways, store_url=fault_node.url, index_alias=ALIAS)


@pytest.fixture
def shared_model_gateways(
    healthy_model: RunningModelService, node_gateways: Callable[..., Gateway]
) -> Callable[..., Gateway]:
    """`node_gateways` calling the shared model service (healthy, as `healthy_model` leaves it)."""
    return functools.partial(node_gateways, healthy_model.url)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Prints a figure line and keeps it for the run's summary ("fault module figures")."""
    return _FIGURES.reporter(request)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _FIGURES.write_summary(terminalreporter)
