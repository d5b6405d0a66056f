"""Waiting on a condition by polling, so no test sleeps for a fixed time."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    condition: Callable[[], T],
    description: str,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Return the first truthy value of `condition()`.

    An exception raised by `condition` counts as "not yet" (a server still
    starting refuses connections). On timeout, raise TimeoutError naming what
    was awaited and the last error seen.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}{detail}")
        time.sleep(interval)
