"""``modelfleet rollout ls|status|wait|pause|resume|promote|abort|rollback|approve``.

``status`` shows the rollout wave by wave and, while a wave bakes, its progress from the
hub's record (:class:`~modelfleet.api.rollouts.WaveProgress`): requests so far against
those needed, the bake time left and every gate's figure next to its limit. ``--watch``
follows it to the end: on a terminal as a live view sized for 100 columns, otherwise (a
script, CI, a log file) as plain lines — one per change, none when nothing changed, no
ANSI codes — and its exit code tells a script how the rollout ended. ``rollout wait``
(``rollout_wait.py``) is that plain watch for CI.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TextIO

import typer
from pydantic import JsonValue
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from modelfleet.api import Rollout
from modelfleet.api.rollouts import GateCheck, RolloutSite, WaveProgress
from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    console,
    print_json,
    say,
    table,
    warn,
    when,
)
from modelfleet.errors import HubUnreachable
from modelfleet.hub_client import HubClient
from modelfleet.loops import Backoff

#: How ``rollout status`` ends, by the rollout's state; a state not listed exits 0. Kept
#: clear of 1 (the hub refused or could not be reached) and 2 (a usage error).
EXIT_CODES = {"failed": 3, "aborted": 4, "rolled_back": 5}
#: ``--watch`` also stops at a pause (it waits for a human) and says so with this code.
EXIT_PAUSED = 6
TERMINAL = ("succeeded", "failed", "aborted", "rolled_back")
EXIT_HELP = (
    "Exit codes: 0 succeeded (without --watch also: running or paused), 1 the hub refused "
    "or could not be reached, 2 usage error, 3 failed (a gate or a site's activation "
    "failed; moved sites went back), 4 aborted, 5 rolled back, 6 (--watch only) paused: "
    "a human decides (`rollout resume|promote|abort ID`; `rollout approve ID` when it "
    "awaits approval)."
)

app = typer.Typer(
    help="Follow and steer progressive rollouts.\n\n"
    "\b\nExamples:\n"
    "  modelfleet rollout ls --state running\n"
    "  modelfleet rollout status r-1a2b3c4d --watch\n"
    "  modelfleet rollout promote r-1a2b3c4d",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="Rollout id (see `rollout ls`).", show_default=False)]
_COLOUR = {"succeeded": "green", "failed": "red", "paused": "yellow", "aborted": "red"}
_GATE_NAMES = {
    "min_requests": "requests",
    "max_error_rate": "error rate",
    "max_p99_ms": "p99",
    "max_p99_ratio": "p99 vs previous",
    "max_drift": "drift",
    "max_anomalies": "open anomalies",
    "min_labels": "labels",
    "min_accuracy": "accuracy",
    "min_accuracy_vs_previous": "accuracy vs previous",
    "max_mae": "MAE",
}
#: Gates that count up to what they need (shown as ``now/needed``, not a limit breached).
_COUNTS = ("min_requests", "min_labels")


# --- figures as text -------------------------------------------------------------------


def _seconds(value: float) -> str:
    """A duration an operator reads at a glance: 45s, 3m05s, 1h02m."""
    total = int(value + 0.5)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "fraction":
        return f"{value:.2%}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit in ("requests", "anomalies", "labels"):
        return f"{int(value)}"
    if unit == "mae":
        return f"{value:.4g}"
    return f"{value:.3f}"


def _limit(check: GateCheck) -> str:
    if check.gate in _COUNTS:
        return f">= {int(check.limit)}" if check.limit is not None else "-"
    if check.gate == "min_accuracy":
        return f">= {_number(check.limit, check.unit)}"
    if check.gate == "min_accuracy_vs_previous":
        drop = _number(check.setting, "fraction")
        if check.limit is None:
            return f"previous - {drop} (previous: not known yet)"
        previous = _number(check.previous, "fraction")
        return f">= {_number(check.limit, 'fraction')} (previous {previous} - {drop})"
    if check.gate == "max_p99_ratio":
        previous = _number(check.baseline_ms, "ms")
        if check.limit is None:
            return f"{check.setting:g}x previous ({previous}: not known yet)"
        return f"<= {_number(check.limit, 'ms')} ({check.setting:g}x previous {previous})"
    return f"<= {_number(check.limit, check.unit)}"


def _gate_text(check: GateCheck) -> str:
    """``p99 3.1 ms <= 50.0 ms ok``: one gate, for the plain lines."""
    name = _GATE_NAMES.get(check.gate, check.gate)
    if check.gate in _COUNTS:
        return f"{name} {int(check.value or 0)}/{int(check.limit)}" if check.limit else ""
    return f"{name} {_number(check.value, check.unit)} {_limit(check)} {check.state}"


def _figures_text(figures: dict[str, JsonValue]) -> str:
    p99 = figures.get("p99_ms")
    text = f"requests {figures.get('requests')}, errors {figures.get('errors')}"
    return text + (f", p99 {p99:.1f} ms" if isinstance(p99, int | float) else "")


def _decision_text(decision: dict[str, Any]) -> str:
    verdict = f"{decision.get('outcome')}: {decision.get('message') or ''}".strip().rstrip(":")
    figures = decision.get("figures")
    if isinstance(figures, dict) and figures:
        verdict += f" ({_figures_text(figures)}"
        baseline = decision.get("baseline")
        if isinstance(baseline, dict) and baseline:
            verdict += f"; previous version {_figures_text(baseline)}"
        verdict += ")"
    return verdict


def _site_text(site: RolloutSite) -> str:
    cell = f"{site.site}: {site.active_version or '-'} {site.state or ''}".strip()
    if isinstance(site.error, dict):
        cell += f" ({site.error.get('code')})"
    elif site.error:
        cell += f" ({site.error})"
    return cell


def _clocks(p: WaveProgress, state: str) -> str:
    if state == "paused":
        return "paused: bake and deadline restart on resume"
    if not p.bake_s:
        bake = "no bake time"
    elif p.bake_left_s > 0:
        bake = f"bake {_seconds(p.bake_left_s)} left of {_seconds(p.bake_s)}"
    else:
        bake = f"baked {_seconds(p.bake_s)}"
    return f"{bake}, deadline in {_seconds(p.deadline_left_s)}"


# --- the terminal view -----------------------------------------------------------------


def render(r: Rollout) -> Group:
    """The rollout as a terminal view that fits 100 columns (also what ``--watch`` redraws):
    a head line, the current wave's progress gate by gate, then every wave and its verdict."""
    colour = _COLOUR.get(r.state, "cyan")
    head = Text.assemble(
        (f"rollout {r.id}", "bold"),
        f"  {r.deployment}: {r.model} {r.from_version or '-'} -> {r.to_version}  ",
        (r.state, colour),
        f"  wave {r.step}/{r.steps}",
    )
    parts: list[Any] = [
        head,
        Text(
            f"{r.strategy}; bake {_seconds(r.bake_s)}, deadline {_seconds(r.progress_deadline_s)}"
        ),
    ]
    if r.progress is not None:
        parts.append(_progress_view(r.progress, r.state))
    grid = Table(show_lines=False, header_style="bold", expand=False)
    grid.add_column("wave")
    grid.add_column("status", no_wrap=True)
    grid.add_column("sites", overflow="fold", max_width=36)
    grid.add_column("verdict", overflow="fold", max_width=48)
    for wave in r.waves:
        verdict = _decision_text(wave.decision) if wave.decision else "-"
        grid.add_row(
            str(wave.index),
            wave.status,
            "\n".join(_site_text(s) for s in wave.sites),
            Text(verdict),
        )
    parts.append(grid)
    if r.approval is not None and r.approval.awaiting:
        parts.append(
            Text.assemble(
                (f"awaiting approval before wave {r.approval.wave}", "bold yellow"),
                f": type `{r.approval.command}`",
            )
        )
    elif r.reason:
        parts.append(Text(f"reason: {r.reason}"))
    return Group(*parts)


def _progress_view(p: WaveProgress, state: str) -> Group:
    needed = max(p.min_requests, 1)
    done = min(p.requests / needed, 1.0)
    bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
    line = Text.assemble(
        (f"wave {p.wave}: ", "bold"),
        f"requests {p.requests}/{p.min_requests} [{bar}]  {_clocks(p, state)}",
    )
    gates = Table(show_lines=False, header_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("gate", "now", "limit", "state"):
        gates.add_column(column, overflow="fold")
    style = {"ok": "green", "breached": "red", "waiting": "yellow"}
    for check in p.gates:
        if check.gate == "min_requests" and not check.limit:
            continue
        gates.add_row(
            _GATE_NAMES.get(check.gate, check.gate),
            _number(check.value, check.unit),
            _limit(check),
            Text(check.state, style.get(check.state, "")),
        )
    parts: list[Any] = [line, gates]
    if p.pending_sites:
        parts.append(Text(f"waiting for {', '.join(p.pending_sites)} to run the new version"))
    if p.verdict == "wait" and p.message:
        parts.append(Text(f"not judged yet: {p.message}"))
    return Group(*parts)


# --- the plain lines -------------------------------------------------------------------


def progress_line(r: Rollout) -> str:
    """The rollout now as one plain line, for logs: no colours, no countdowns."""
    head = f"rollout {r.id} {r.model} {r.from_version or '-'} -> {r.to_version}: {r.state}"
    head += f", wave {r.step}/{r.steps}"
    p = r.progress
    if p is None:
        return head + (f": {r.reason}" if r.reason else "")
    texts = [t for t in (_gate_text(c) for c in p.gates) if t]
    line = f"{head}: " + ", ".join(texts) if texts else head
    if p.pending_sites:
        line += f"; waiting for {', '.join(p.pending_sites)}"
    return line


def _clock_text(r: Rollout) -> str:
    p = r.progress
    return f"; {_clocks(p, r.state)}" if p is not None else ""


def _stamp() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _poll(hc: HubClient, rollout_id: str, interval: float, patience_s: float) -> Rollout:
    """The rollout ``interval`` seconds from now. While the hub is unreachable (a restart,
    a failover to another replica) the watch keeps asking, with back-off, for up to
    ``patience_s``, and says so once on stderr: a pipeline waiting on a rollout must not
    fail because the hub restarted under it. Past that, the error ends the command (1)."""
    time.sleep(interval)
    backoff = Backoff(first_s=min(interval, 1.0), max_s=10.0)
    deadline = time.monotonic() + patience_s
    failures = 0
    while True:
        try:
            r = hc.get_rollout(rollout_id)
        except HubUnreachable as exc:
            if time.monotonic() >= deadline:
                raise
            failures += 1
            if failures == 1:
                warn(f"{exc.message}; still watching (for up to {patience_s:.0f}s)")
            time.sleep(min(backoff.delay(failures), max(0.0, deadline - time.monotonic())))
            continue
        if failures:
            say(f"hub reachable again: watching rollout {rollout_id}", err=True)
        return r


def _wave_sites(r: Rollout, step: int) -> str:
    """`` (site-a, site-b)``: the sites of wave ``step`` (0-based), so a log says what moved."""
    if not 0 <= step < len(r.waves):
        return ""
    names = [s.site for s in r.waves[step].sites]
    if len(names) > 5:
        names = [*names[:5], f"+{len(names) - 5} more"]
    return f" ({', '.join(names)})" if names else ""


def watch_plain(
    hc: HubClient,
    r: Rollout,
    interval: float,
    patience_s: float,
    *,
    deadline: float | None = None,
    through_pause: bool = False,
    out: TextIO | None = None,
    on_pause: Callable[[Rollout], None] | None = None,
) -> Rollout:
    """One line whenever something changed (figures, sites, wave, state), with the time
    and the clocks; the verdict of each wave as it is reached. Returns at the end, at a
    pause unless ``through_pause`` (then ``on_pause`` hears of each pause as it starts),
    or once ``deadline`` (monotonic) has passed — the rollout is then still going, which
    the caller tells by its state."""
    last = ""
    seen = 0
    paused = False
    while True:
        for entry in r.history[seen:]:
            step = int(entry.get("step", 0))
            what = f"wave {step + 1}{_wave_sites(r, step)} {_decision_text(entry)}"
            print(f"{_stamp()} rollout {r.id} {what}", flush=True, file=out)
        seen = len(r.history)
        line = progress_line(r)
        if line != last:
            print(f"{_stamp()} {line}{_clock_text(r)}", flush=True, file=out)
            last = line
        if r.state in TERMINAL or (r.state == "paused" and not through_pause):
            return r
        if r.state == "paused" and not paused and on_pause is not None:
            on_pause(r)
        paused = r.state == "paused"
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return r
            # The hub's restarts are ridden through only as long as the timeout allows.
            r = _poll(hc, r.id, min(interval, left), min(patience_s, left))
            continue
        r = _poll(hc, r.id, interval, patience_s)


def _watch_live(hc: HubClient, r: Rollout, interval: float, patience_s: float) -> Rollout:
    with Live(render(r), console=console, refresh_per_second=4) as live:
        while r.state not in TERMINAL and r.state != "paused":
            r = _poll(hc, r.id, interval, patience_s)
            live.update(render(r))
    return r


# --- commands --------------------------------------------------------------------------


@app.command("ls")
def ls(
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List rollouts, newest first.

    \b
    Examples:
      modelfleet rollout ls --state running
    """
    with client(hub, token) as hc:
        rows = hc.list_rollouts(state)
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["id", "deployment", "model", "from", "to", "state", "wave", "created"],
        [
            [
                r.id,
                r.deployment,
                r.model,
                r.from_version,
                r.to_version,
                f"{r.state} (awaiting approval)"
                if r.approval is not None and r.approval.awaiting
                else r.state,
                f"{r.step}/{r.steps}",
                when(r.created_at),
            ]
            for r in rows
        ],
    )


@app.command(epilog=EXIT_HELP)
def status(
    rollout_id: IdArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Follow it until it ends or pauses: a live view on a terminal, plain "
            "lines (one per change) otherwise.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, max=60.0, help="Seconds between polls (0.1-60).")
    ] = 1.0,
    hub_patience: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            help="With --watch: how long to keep asking while the hub is unreachable (a "
            "restart, a failover) before giving up with exit 1 (0-3600 s).",
        ),
    ] = 300.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One rollout, wave by wave: sites, their versions, each wave's verdict, and while a
    wave bakes its requests so far vs needed, bake time left and each gate vs its limit.

    \b
    Examples:
      modelfleet rollout status r-1a2b3c4d
      modelfleet rollout status r-1a2b3c4d --watch && echo rolled out
    """
    with client(hub, token) as hc:
        r = hc.get_rollout(rollout_id)
        if json_out and not watch:
            print_json(r)
        elif not watch:
            console.print(render(r))
        elif json_out:
            while r.state not in TERMINAL and r.state != "paused":
                r = _poll(hc, rollout_id, interval, hub_patience)
            print_json(r)
        elif console.is_terminal:
            r = _watch_live(hc, r, interval, hub_patience)
        else:
            r = watch_plain(hc, r, interval, hub_patience)
    if watch and r.state == "paused":
        if not json_out and r.approval is not None and r.approval.awaiting:
            sys.stderr.write(
                f"rollout {r.id} awaits approval before wave {r.approval.wave}: "
                f"continue with `{r.approval.command}` or stop with "
                f"`modelfleet rollout abort {r.id}`\n"
            )
        elif not json_out:
            sys.stderr.write(
                f"rollout {r.id} paused: {r.reason or 'by an operator'}; "
                f"continue with `modelfleet rollout resume|promote {r.id}` "
                f"or stop with `modelfleet rollout abort {r.id}`\n"
            )
        raise typer.Exit(EXIT_PAUSED)
    code = EXIT_CODES.get(r.state, 0)
    if code:
        raise typer.Exit(code)


_ACTION_EXAMPLES = {
    "pause": "modelfleet rollout pause r-1a2b3c4d",
    "resume": "modelfleet rollout resume r-1a2b3c4d",
    "promote": "modelfleet rollout promote r-1a2b3c4d",
    "abort": "modelfleet rollout abort r-1a2b3c4d",
    "rollback": "modelfleet rollout rollback r-1a2b3c4d",
    "approve": "modelfleet rollout approve r-1a2b3c4d",
}


def _action(name: str, doc: str) -> None:
    def command(rollout_id: IdArg, hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None) -> None:
        with client(hub, token) as hc:
            r = hc.rollout_action(rollout_id, name)
        console.print(render(r))

    command.__doc__ = f"{doc}\n\n\b\nExamples:\n  {_ACTION_EXAMPLES[name]}"
    app.command(name)(command)


_action("pause", "Stop advancing (sites keep what they run now).")
_action("resume", "Continue a paused rollout; the current wave's bake and deadline restart.")
_action("promote", "Accept the current wave without its gates and move on (ends a pause).")
_action("abort", "Stop and move every moved site back to its previous version.")
_action("rollback", "Undo: moved sites back; after success, the previous version everywhere.")
_action(
    "approve",
    "Let a rollout that awaits approval start its waiting wave (operator role; audited). "
    "`rollout status ID` says when one waits.",
)

__all__ = ["EXIT_CODES", "EXIT_PAUSED", "app", "progress_line", "render", "watch_plain"]
