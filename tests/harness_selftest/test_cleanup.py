"""The harness stops every process it started, when a test fails and when the run
is interrupted, and shows the process's log with the failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.polling import poll_until
from harness.provisioning import REPO_ROOT

_CASES = REPO_ROOT / "tests" / "bed" / "cleanup_cases.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it has exited all the same.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _child_pytest(case: str, pid_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"{_CASES}::{case}"],
        cwd=REPO_ROOT / "tests",
        env={**os.environ, "SLEEPER_PID_FILE": str(pid_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The child stands for a run in a terminal, where Ctrl-C works. A suite started
        # in the background by a non-interactive shell inherits SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler: give the child the default.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _output_within(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's output once it exits; a child still running then is killed and shown."""
    try:
        return child.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"the child pytest did not exit within {timeout:.0f}s; its output:\n{child.communicate()[0]}")


def test_a_failing_test_leaves_no_process_running_and_prints_its_log(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"

    child = _child_pytest("test_fails_while_a_process_runs", pid_file)
    output = _output_within(child, timeout=120)

    assert child.returncode == 1, output
    assert "log of sleeper" in output, output
    assert "sleeper started" in output, output
    assert not _alive(int(pid_file.read_text()))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupted_run_leaves_no_process_running(tmp_path: Path, sig: signal.Signals) -> None:
    pid_file = tmp_path / "sleeper.pid"
    child = _child_pytest("test_waits_to_be_interrupted", pid_file)
    sleeper_pid = int(poll_until(lambda: pid_file.exists() and pid_file.read_text(), "the sleeper's pid"))

    child.send_signal(sig)
    output = _output_within(child, timeout=60)

    assert child.returncode != 0, output
    assert not _alive(sleeper_pid), output
