"""Building blocks of a test module that owns its own bed (faults, cluster): its model
service, its gateways stopped after each case, and the figure lines it prints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service


@contextmanager
def module_model_service(
    venv_bin: Path, work_dir: Path, extra_env: dict[str, str], name: str
) -> Iterator[RunningModelService]:
    """A model service of the module alone (no telemetry), stopped when the block ends."""
    service = start_model_service(venv_bin, work_dir, extra_env=extra_env, name=name)
    try:
        yield service
    finally:
        service.stop()


@contextmanager
def faults_off(model: RunningModelService) -> Iterator[RunningModelService]:
    """The model service with fault injection off before and after the block."""
    model.set_faults()
    try:
        yield model
    finally:
        model.set_faults()


@contextmanager
def gateway_starter(work_dir: Path, *args: object, **defaults: object) -> Iterator[Callable[..., Gateway]]:
    """A function starting gateways in `work_dir` (`Gateway.start` arguments after `args`;
    keyword arguments override `defaults`); every one started is stopped when the block ends,
    the last first."""
    started: list[Gateway] = []

    def start(*more_args: object, **kwargs: object) -> Gateway:
        gateway = Gateway.start(work_dir, *args, *more_args, **{**defaults, **kwargs})
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            gateway.stop()


class Figures:
    """Figure lines a module prints as its cases run and lists again in the run's summary."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        """Prints the line and keeps it for the summary."""
        print(line)
        self.lines.append(line)

    def reporter(self, request: pytest.FixtureRequest) -> Callable[[str], None]:
        """`add` with the case's name in front, for the module's `figures` fixture."""

        def report(line: str) -> None:
            self.add(f"[{request.node.name}] {line}")

        return report

    def write_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """The kept lines as a section of the terminal summary (none when nothing was kept)."""
        if self.lines:
            terminalreporter.section(self.title)
            for line in self.lines:
                terminalreporter.write_line(line)
