"""Arming a real hub or site process to SIGKILL itself at a named crash point.

A crash test (1) starts the process with :func:`armed` in its ``extra_env``, (2) drives it
to the window, (3) :func:`wait_killed` checks it died there, by SIGKILL, and not of
something else, (4) restarts it unarmed and checks the window's invariant. See
:mod:`modelfleet.crashpoints` and ``docs/reliability.md``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from modelfleet.crashpoints import CRASH_POINTS
from tests.waiting import wait_for

__all__ = ["armed", "wait_killed"]


def armed(point: str, marker: Path, *, after: int = 0) -> dict[str, str]:
    """The environment that makes a process die at ``point`` (after ``after`` passes)."""
    if point not in CRASH_POINTS:
        raise AssertionError(f"{point} is not in modelfleet.crashpoints.CRASH_POINTS")
    marker.unlink(missing_ok=True)
    return {
        "MODELFLEET_CRASH_AT": point,
        "MODELFLEET_CRASH_AFTER": str(after),
        "MODELFLEET_CRASH_MARKER": str(marker),
    }


def wait_killed(
    proc: subprocess.Popen[bytes] | None, point: str, marker: Path, timeout: float = 90.0
) -> None:
    """Wait until ``proc`` has died at ``point``: SIGKILLed, with the marker naming it."""
    if proc is None:
        raise AssertionError("the process was never started")
    wait_for(lambda: proc.poll() is not None, f"the process to die at {point}", timeout)
    assert proc.returncode == -9, f"expected SIGKILL at {point}, got exit {proc.returncode}"
    assert marker.read_text().split()[0] == point, marker.read_text()
