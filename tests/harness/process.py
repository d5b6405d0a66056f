"""Child processes of the test bed: started in their own process group, logged to a
file, registered so that they are stopped at the end, also when a test fails or
the run is interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.polling import poll_until

_registry: list[ManagedProcess] = []
_started: list[ManagedProcess] = []
_registry_lock = threading.Lock()

T = TypeVar("T")


class ManagedProcess:
    """One program of the bed (search node, collector, a service) run as a child."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="bed-logs-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None
        # Where this start's output begins: a program started again under the same name
        # appends to the same log, and an earlier run's lines must not be read as its own.
        self._output_offset = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> ManagedProcess:
        """Start the program, its output going to `log_path`; register it for cleanup."""
        with open(self.log_path, "ab") as log:
            self._output_offset = log.tell()
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: stop() reaches the program's children too
                # (a JVM's, a shell wrapper's), and a Ctrl-C in the terminal
                # reaches the harness, which then stops the group itself.
                start_new_session=True,
            )
        with _registry_lock:
            _registry.append(self)
            _started.append(self)
        return self

    def wait_until_ready(self, check: Callable[[], object], description: str, timeout: float) -> None:
        """Poll `check` until it is truthy. If the program exits first, fail at once with its
        log: `poll_until` takes an exception for "not yet", so the exit must end the polling."""
        exited = object()

        def ready() -> object:
            return check() if self.is_running() else exited

        if poll_until(ready, description, timeout=timeout) is exited:
            raise RuntimeError(f"{self.name} exited before {description}:\n{self.log_text()[-4000:]}")

    def wait_for_line(self, parse: Callable[[str], T | None], description: str, timeout: float) -> T:
        """The first value other than None that `parse` returns for a complete line this start
        wrote (e.g. the address a program bound on port 0 and printed); fails as
        `wait_until_ready` does."""
        found: list[T] = []

        def printed() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(self._output_offset)
                output = log.read().decode(errors="replace")
            # The last piece has no newline yet: it may still be half written.
            for line in output.split("\n")[:-1]:
                value = parse(line)
                if value is not None:
                    found.append(value)
                    return True
            return False

        self.wait_until_ready(printed, description, timeout)
        return found[0]

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of the program's group (itself or a child) still exists."""
        if self._popen is None:
            return False
        try:
            os.killpg(self._popen.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the program itself (not its group), as an orchestrator would."""
        if self.is_running():
            self._popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the program to exit; its return code (TimeoutExpired if it does not)."""
        assert self._popen is not None, f"{self.name} was never started"
        return self._popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`; the return code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        # Children that outlived their parent still belong to the group.
        self._signal_group(signal.SIGKILL)
        with _registry_lock:
            if self in _registry:
                _registry.remove(self)
        return self._popen.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)


def running_processes() -> list[ManagedProcess]:
    """Every process started and not yet stopped, oldest first."""
    with _registry_lock:
        return list(_registry)


def started_processes() -> list[ManagedProcess]:
    """Every process started in this run, running or not, oldest first."""
    with _registry_lock:
        return list(_started)


def stop_all() -> None:
    """Stop every registered process, newest first (services before their dependencies)."""
    for process in reversed(running_processes()):
        process.stop()
