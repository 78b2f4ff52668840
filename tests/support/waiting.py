"""Waiting on a condition, never on the clock: the one polling loop the tests share.

A test that waits for a file, a run's status or a port asks `wait_until` to poll for it. The
timeout is only a hang guard (set it at 10x or more of what the wait takes on an idle machine):
a loaded machine makes the wait longer, never the test wrong. The loop is bounded in time, not
in steps, so a slow poll cannot turn a bounded loop into an endless one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    alive: subprocess.Popen[str] | subprocess.Popen[bytes] | None = None,
) -> T:
    """Poll `condition` until it returns a true value, and return that value.

    Raises AssertionError naming `what` once `timeout` seconds have passed, or as soon as the
    process `alive` (a job the condition depends on) has exited: waiting on a dead process
    would only run out the hang guard.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if alive is not None and alive.poll() is not None:
            out, err = alive.communicate()
            raise AssertionError(
                f"waiting for {what}: the process exited with {alive.returncode}\n{out!s}\n{err!s}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: not after {timeout:.0f} s")
        time.sleep(interval)
