"""``modelfleet demo``: the product's main job end to end on the embedded default."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the hub running at the end.")] = False,
    fast: Annotated[bool, typer.Option("--fast", help="Shorter run (used by the tests).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Start a hub, train and push a model, list it, pull it back verified."""
    from modelfleet.sim.demo import run_demo

    ok = run_demo(keep=keep, fast=fast, json_out=json_out)
    if not ok:
        raise typer.Exit(1)
