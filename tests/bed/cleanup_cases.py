"""Cases run in a child pytest by harness_selftest/test_cleanup.py (not collected
on their own): each starts a long-running process through the harness, records
its pid, then fails or waits to be interrupted."""

import os
import sys
import time
from pathlib import Path

from harness.process import ManagedProcess


def _start_sleeper() -> None:
    sleeper = ManagedProcess(
        "sleeper", [sys.executable, "-c", "print('sleeper started', flush=True); import time; time.sleep(600)"]
    ).start()
    Path(os.environ["SLEEPER_PID_FILE"]).write_text(str(sleeper.pid))


def test_fails_while_a_process_runs() -> None:
    _start_sleeper()
    time.sleep(0.5)  # let the sleeper print, so its log has a line to show
    raise AssertionError("deliberate failure")


def test_waits_to_be_interrupted() -> None:
    _start_sleeper()
    time.sleep(600)
