"""wait_for: poll a condition until it holds or a timeout, for tests that watch another process."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 30.0, what: str = "condition", every: float = 0.05):  # noqa: ANN001, ANN201
    """pred()'s first truthy value; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
