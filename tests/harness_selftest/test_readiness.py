"""Waiting for a started program to be ready ends at once, with its log, when it dies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.process import ManagedProcess


def test_a_program_that_exits_before_it_is_ready_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    program = [sys.executable, "-c", "print('bad configuration', flush=True); raise SystemExit(3)"]
    crashing = ManagedProcess("crashing", program, log_dir=tmp_path).start()

    # Not a TimeoutError after the whole timeout: the exit ends the wait.
    with pytest.raises(RuntimeError, match="crashing exited before it answers") as failure:
        crashing.wait_until_ready(lambda: False, "it answers", timeout=60)

    assert "bad configuration" in str(failure.value)
    crashing.stop()


def test_a_ready_program_ends_the_wait(tmp_path: Path) -> None:
    sleeper = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_dir=tmp_path).start()
    checks = iter([False, False, True])

    sleeper.wait_until_ready(lambda: next(checks), "the third check", timeout=10)

    assert sleeper.is_running()
    sleeper.stop()
