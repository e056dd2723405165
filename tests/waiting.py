"""Waiting for an event in tests that drive real processes: never a sleep as synchronisation.

One helper for the test files that each had their own copy: poll ``predicate`` until it
holds, or fail naming ``what`` was awaited. The deadline is generous on purpose (a machine
three times slower must pass); a fast machine returns as soon as the event happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for"]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
