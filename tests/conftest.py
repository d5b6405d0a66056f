"""Session fixtures of the test bed (search node, collector), process logs on
failure, and the guarantee that every process the suite started is stopped."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.collector import Collector
from harness.process import running_processes, started_processes, stop_all
from harness.provisioning import cache_dir, provisioned
from harness.search_node import SearchNode

_LOG_TAIL_LINES = 150


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same path as Ctrl-C, so pytest tears fixtures down.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # The Rust builds the suite runs (gateway binary, bed smoke test) share the cached
    # target directory with `make`, also when pytest is started by hand.
    os.environ.setdefault("CARGO_TARGET_DIR", str(cache_dir() / "cargo-target"))
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Last line of defence if pytest itself dies between fixture teardowns.
    atexit.register(stop_all)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()
    survivors = [process for process in started_processes() if process.group_alive()]
    if survivors:
        names = ", ".join(f"{process.name} (pid {process.pid})" for process in survivors)
        print(f"\nprocesses still running after the suite: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.failed:
        first = item.stash.get(_first_process_key, 0)
        shown = {id(p): p for p in [*running_processes(), *started_processes()[first:]]}
        for process in shown.values():
            tail = "\n".join(process.log_text().splitlines()[-_LOG_TAIL_LINES:])
            report.sections.append((f"log of {process.name} ({process.log_path})", tail))
    return report


_first_process_key = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_first_process_key] = len(started_processes())


@pytest.fixture(scope="session")
def bed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bed")


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The provisioned venv's bin folder, the one running this pytest."""
    return Path(sys.executable).parent


@pytest.fixture(scope="session")
def search_node(bed_dir: Path) -> Iterator[SearchNode]:
    node = SearchNode.start(provisioned("provision-search-node.sh"), bed_dir)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def collector(bed_dir: Path) -> Iterator[Collector]:
    running = Collector.start(provisioned("provision-collector.sh"), bed_dir)
    yield running
    running.stop()
