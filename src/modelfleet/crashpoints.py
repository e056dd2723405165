"""Named crash points: where a process may die and the fleet must still be right afterwards.

The design promises that rollouts, FL rounds, uploads and telemetry resume correctly after
any process is killed. The windows where a kill matters most (a batch marked but not sent, a
blob published but its version row not committed, a download half done, ...) are named here,
and the code calls :func:`crash_point` with that name exactly there. A test starts a real hub
or site process with ``MODELFLEET_CRASH_AT=<name>`` in its environment; when the process
reaches that point it SIGKILLs itself: no ``finally``, no ``atexit``, no flushed buffers, as
with the OOM killer or a pulled plug. The test then restarts it and checks the window's
invariant (exact totals, no orphan, no double effect). ``docs/reliability.md`` lists every
point, its invariant and the test that proves it.

Off unless the environment asks (read once, at import). When it is off, :func:`crash_point`
is one comparison of a module global with ``None``: nothing is looked up, nothing logged.

Environment (read by the process that may crash, never sent over the network):

- ``MODELFLEET_CRASH_AT`` -- the point's name (one of :data:`CRASH_POINTS`).
- ``MODELFLEET_CRASH_AFTER`` -- how many times to pass the point before dying (default 0:
  die on the first pass). Lets a test crash the second batch, the third chunk, ...
- ``MODELFLEET_CRASH_MARKER`` -- a file to create (with the point's name and the pid) just
  before dying, so the test can tell "died at the point" from "died of something else".

An unknown name is refused when the module is imported (:class:`CrashPointError`), so a typo
in a test cannot silently disable the crash it meant to cause.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from modelfleet.errors import CrashPointError

__all__ = ["CRASH_POINTS", "CrashPointError", "armed_point", "crash_point"]

#: Every named window, with what must hold after a SIGKILL there. Keep in step with
#: ``docs/reliability.md`` (a test checks that each name is documented and tested).
CRASH_POINTS: dict[str, str] = {
    # site telemetry spool
    "site.spool.after_mark": "a batch taken but not yet sent is sent after restart, once",
    "site.spool.after_send": "a batch the hub stored but the site kept is not counted twice",
    # hub telemetry ingest
    "hub.ingest.mid_transaction": "a half-written report rolls back whole; the retry counts once",
    # hub model upload
    "hub.upload.after_blob": "a blob without its version row is no version and is collected",
    "hub.upload.after_row": "a version row never points at a missing blob",
    # site agent reconcile
    "site.reconcile.mid_download": "a download resumes with Range from the bytes on disk",
    "site.reconcile.after_verify": "a verified artifact is swapped in after restart",
    "site.reconcile.mid_swap": "the site serves the old or the new version, never neither",
    # federated learning
    "hub.fl.after_aggregate": "the round closes once after restart, from the same updates",
    "hub.fl.after_register": "the job's result is registered exactly once",
    "hub.fl.mid_variants": "every site variant is registered exactly once",
    # rollout controller
    "hub.rollout.after_assign": "a wave's committed transition gets its assignments once",
}

_ENV_NAME = "MODELFLEET_CRASH_AT"
_ENV_AFTER = "MODELFLEET_CRASH_AFTER"
_ENV_MARKER = "MODELFLEET_CRASH_MARKER"


def _armed_from_env() -> tuple[str | None, int, Path | None]:
    name = os.environ.get(_ENV_NAME, "").strip()
    if not name:
        return None, 0, None
    if name not in CRASH_POINTS:
        known = ", ".join(sorted(CRASH_POINTS))
        raise CrashPointError(f"{_ENV_NAME}={name!r} is no crash point; known: {known}")
    after_text = os.environ.get(_ENV_AFTER, "0").strip() or "0"
    if not after_text.isdigit() or int(after_text) > 1_000_000:
        raise CrashPointError(f"{_ENV_AFTER}={after_text!r}: expected a count 0..1000000")
    marker = os.environ.get(_ENV_MARKER, "").strip()
    return name, int(after_text), Path(marker) if marker else None


_ARMED, _PASSES_LEFT, _MARKER = _armed_from_env()


def armed_point() -> str | None:
    """The point this process will die at, or None (what a startup log line may show)."""
    return _ARMED


def crash_point(name: str) -> None:
    """Die here, by SIGKILL, if the environment armed ``name``; otherwise do nothing."""
    global _PASSES_LEFT
    if _ARMED is None or name != _ARMED:
        return
    if _PASSES_LEFT > 0:
        _PASSES_LEFT -= 1
        return
    if _MARKER is not None:
        # Written and closed before the kill: the test reads a whole line or no file.
        with _MARKER.open("w", encoding="utf-8") as fh:
            fh.write(f"{name} {os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
