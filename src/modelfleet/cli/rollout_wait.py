"""``modelfleet rollout wait ID`` and what ``deploy --wait`` shares with it: a rollout
followed to its end for CI.

It is ``rollout status --watch``'s plain-line watch (one line per change, no redraw, so a
CI log keeps them), with the same exit codes by state, plus what a pipeline needs: a
``--timeout`` with its own code (7), and a rule for pauses (``--on-pause wait`` waits for
an operator's resume, promote or approval up to the timeout; ``exit`` ends with 6). The
reason of every non-zero exit goes to stderr in one line. Registered under ``rollout`` by
``cli/main.py`` (this module imports ``cli/rollout.py``, never the other way round).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, TextIO

import typer

from modelfleet.api import Rollout
from modelfleet.cli.common import DEFAULT_HUB, HubOpt, TokenOpt, client
from modelfleet.cli.rollout import EXIT_CODES, EXIT_PAUSED, IdArg, watch_plain
from modelfleet.errors import InvalidInput
from modelfleet.hub_client import HubClient

#: ``rollout wait`` (and ``deploy --wait``) gave up at ``--timeout`` with the rollout still
#: going; failed, aborted, rolled back and paused keep the codes of ``status --watch``.
EXIT_TIMEOUT = 7
ON_PAUSE = ("wait", "exit")
WAIT_HELP = (
    "Exit codes: 0 succeeded, 1 the hub refused or could not be reached (for longer than "
    "--hub-patience), 2 usage error, 3 failed (a gate or a site's activation failed; moved "
    "sites went back), 4 aborted, 5 rolled back, 6 paused (with --on-pause exit only), "
    "7 --timeout passed with the rollout still running or paused. The reason of every "
    "non-zero code is printed on stderr."
)


def wait_until_done(
    hc: HubClient,
    rollout_id: str,
    *,
    timeout_s: float,
    on_pause: str = "wait",
    interval: float = 1.0,
    hub_patience: float = 300.0,
    out: TextIO | None = None,
) -> int:
    """Follow a rollout to its end in plain lines (one per change: CI logs keep them) and
    return the exit code that says how it ended (:data:`WAIT_HELP`), its reason already
    on stderr. Shared by ``rollout wait`` and ``deploy --wait`` so both end alike.

    A pause (an operator, an inconclusive gate, an approval) is waited through with
    ``on_pause="wait"`` — someone may resume it while the pipeline waits, bounded by
    ``timeout_s`` — or ends the wait with :data:`EXIT_PAUSED` with ``on_pause="exit"``."""
    if on_pause not in ON_PAUSE:
        raise InvalidInput(f"--on-pause {on_pause!r}: use one of {', '.join(ON_PAUSE)}")
    deadline = time.monotonic() + timeout_s

    def waiting(r: Rollout) -> None:  # the line above already says it paused
        sys.stderr.write(
            f"rollout {r.id} paused: {r.reason or 'by an operator'}; waiting (up to "
            f"--timeout) for `modelfleet rollout resume|promote|abort {r.id}`\n"
        )
        sys.stderr.flush()

    r = watch_plain(
        hc,
        hc.get_rollout(rollout_id),
        interval,
        hub_patience,
        deadline=deadline,
        through_pause=on_pause == "wait",
        out=out,
        on_pause=waiting,
    )
    what = f"rollout {r.id} ({r.model} {r.from_version or '-'} -> {r.to_version})"
    if r.state == "succeeded":
        return 0
    if r.state in EXIT_CODES:
        sys.stderr.write(f"{what} {r.state.replace('_', ' ')}: {r.reason or 'no reason given'}\n")
        return EXIT_CODES[r.state]
    if r.state == "paused" and on_pause == "exit":
        sys.stderr.write(
            f"{what} paused: {r.reason or 'by an operator'}; continue with "
            f"`modelfleet rollout resume|promote {r.id}` or stop with "
            f"`modelfleet rollout abort {r.id}`\n"
        )
        return EXIT_PAUSED
    sys.stderr.write(
        f"{what} still {r.state} at wave {r.step}/{r.steps} after --timeout "
        f"{timeout_s:g}s; it goes on without this command (`modelfleet rollout status "
        f"{r.id}`)\n"
    )
    return EXIT_TIMEOUT


def _check_on_pause(value: str) -> str:
    """Refused as a usage error (2) before anything is deployed or waited for."""
    if value not in ON_PAUSE:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ON_PAUSE)}")
    return value


TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1.0,
        max=7 * 86_400.0,
        help="Give up after this many seconds with exit 7; the rollout itself goes on "
        "(1 s - 7 days).",
    ),
]
OnPauseOpt = Annotated[
    str,
    typer.Option(
        "--on-pause",
        callback=_check_on_pause,
        help="At a pause (an operator, an inconclusive gate, an approval): 'wait' for "
        "someone to resume, promote or abort it (up to --timeout), or 'exit' with code 6.",
    ),
]


def wait(
    rollout_id: IdArg,
    timeout: TimeoutOpt = 3600.0,
    on_pause: OnPauseOpt = "wait",
    interval: Annotated[
        float, typer.Option(min=0.1, max=60.0, help="Seconds between polls (0.1-60).")
    ] = 1.0,
    hub_patience: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            help="How long to keep asking while the hub is unreachable (a restart, a "
            "failover) before giving up with exit 1 (0-3600 s; never past --timeout).",
        ),
    ] = 300.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Wait until a rollout ends, for CI: one plain line per change, exit 0 when it
    succeeded and a distinct non-zero code (with the reason on stderr) when it did not.

    \b
    Examples:
      modelfleet rollout wait r-1a2b3c4d --timeout 1800
      modelfleet rollout wait r-1a2b3c4d --on-pause exit || echo "needs a human: $?"
    """
    with client(hub, token) as hc:
        code = wait_until_done(
            hc,
            rollout_id,
            timeout_s=timeout,
            on_pause=on_pause,
            interval=interval,
            hub_patience=hub_patience,
        )
    if code:
        raise typer.Exit(code)


__all__ = [
    "EXIT_TIMEOUT",
    "ON_PAUSE",
    "WAIT_HELP",
    "OnPauseOpt",
    "TimeoutOpt",
    "wait",
    "wait_until_done",
]
