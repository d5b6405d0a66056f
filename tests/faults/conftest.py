"""Fixtures of the fault module: its own search node (the cases kill and freeze it, so
not the session's shared one), a shared model service, gateways started per test (on that
node or the embedded store) and stopped after it, new data ids, and the latency figures
each case prints."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.fault_bed import ALIAS, MODEL_SERVICE_ENV, signal_group
from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service
from harness.provisioning import provisioned
from harness.search_node import SearchNode

_FIGURES: list[str] = []


@pytest.fixture(scope="package")
def fault_dir(bed_dir: Path) -> Path:
    return bed_dir / "faults"


@pytest.fixture(scope="package")
def venv_bin() -> Path:
    return Path(sys.executable).parent


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
    service = start_model_service(venv_bin, fault_dir, extra_env=MODEL_SERVICE_ENV, name="model-service-faults")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def healthy_model(model: RunningModelService) -> Iterator[RunningModelService]:
    """The shared model service with injection off before and after the test."""
    model.set_faults()
    try:
        yield model
    finally:
        signal_group(model.process, signal.SIGCONT)
        model.set_faults()


@pytest.fixture
def gateways(fault_dir: Path) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways (`Gateway.start` arguments, work folder given) and stops every one after the test."""
    started: list[Gateway] = []

    def start(*args: object, **kwargs: object) -> Gateway:
        gateway = Gateway.start(fault_dir, *args, **kwargs)
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            gateway.stop()


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

    def report(line: str) -> None:
        text = f"[{request.node.name}] {line}"
        print(text)
        _FIGURES.append(text)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("fault module figures (latencies reported, not asserted)")
        for line in _FIGURES:
            terminalreporter.write_line(line)
