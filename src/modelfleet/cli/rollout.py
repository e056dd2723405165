"""``modelfleet rollout ls|status|pause|resume|promote|abort|rollback``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from pydantic import JsonValue
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from modelfleet.api import Rollout
from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    console,
    print_json,
    table,
    when,
)

app = typer.Typer(help="Follow and steer progressive rollouts.", no_args_is_help=True)

TERMINAL = ("succeeded", "failed", "aborted", "rolled_back")
IdArg = Annotated[str, typer.Argument(help="Rollout id (see `rollout ls`).", show_default=False)]


def render(r: Rollout) -> Group:
    """The per-wave progress view (also what ``--watch`` redraws)."""
    colour = {"succeeded": "green", "failed": "red", "paused": "yellow"}.get(r.state, "cyan")
    head = Text.from_markup(
        f"[bold]rollout {r.id}[/bold]  {r.deployment}: {r.model} "
        f"{r.from_version or '-'} -> {r.to_version}  [{colour}]{r.state}[/{colour}]  "
        f"wave {r.step}/{r.steps}  ({r.strategy}, bake {r.bake_s:g}s, "
        f"deadline {r.progress_deadline_s:g}s)"
    )
    grid = Table(show_lines=False, header_style="bold")
    for column in ("wave", "status", "sites", "verdict"):
        grid.add_column(column, overflow="fold")
    for wave in r.waves:
        sites = []
        for s in wave.sites:
            cell = f"{s.site}: {s.active_version or '-'} {s.state or ''}".strip()
            if isinstance(s.error, dict):
                cell += f" [{s.error.get('code')}]"
            elif s.error:
                cell += f" [{s.error}]"
            sites.append(cell)
        decision = wave.decision or {}
        verdict = ""
        if decision:
            verdict = f"{decision.get('outcome')}: {decision.get('message') or ''}".strip()
            figures = decision.get("figures")
            if isinstance(figures, dict) and figures:
                verdict += f" ({_figures_text(figures)}"
                baseline = decision.get("baseline")
                if isinstance(baseline, dict) and baseline:
                    verdict += f"; previous version {_figures_text(baseline)}"
                verdict += ")"
        grid.add_row(str(wave.index), wave.status, "\n".join(sites), verdict or "-")
    parts: list[Any] = [head, grid]
    if r.reason:
        parts.append(Text(f"reason: {r.reason}"))
    return Group(*parts)


def _figures_text(figures: dict[str, JsonValue]) -> str:
    p99 = figures.get("p99_ms")
    text = f"requests {figures['requests']}, errors {figures['errors']}"
    return text + (f", p99 {p99:.1f} ms" if p99 is not None else "")


@app.command("ls")
def ls(
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List rollouts, newest first."""
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
                r.state,
                f"{r.step}/{r.steps}",
                when(r.created_at),
            ]
            for r in rows
        ],
    )


@app.command()
def status(
    rollout_id: IdArg,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until it ends.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between redraws.")] = 1.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One rollout, wave by wave: sites, their versions, each wave's verdict and figures."""
    with client(hub, token) as hc:
        r = hc.get_rollout(rollout_id)
        if json_out:
            print_json(r)
            return
        if not watch:
            console.print(render(r))
            return
        with Live(render(r), console=console, refresh_per_second=4) as live:
            while r.state not in TERMINAL:
                time.sleep(interval)
                r = hc.get_rollout(rollout_id)
                live.update(render(r))


def _action(name: str, doc: str) -> None:
    def command(rollout_id: IdArg, hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None) -> None:
        with client(hub, token) as hc:
            r = hc.rollout_action(rollout_id, name)
        console.print(render(r))

    command.__doc__ = doc
    app.command(name)(command)


_action("pause", "Stop advancing (sites keep what they run now).")
_action("resume", "Continue a paused rollout; the current wave's bake and deadline restart.")
_action("promote", "Accept the current wave without its gates and move on (ends a pause).")
_action("abort", "Stop and move every moved site back to its previous version.")
_action("rollback", "Undo: moved sites back; after success, the previous version everywhere.")
