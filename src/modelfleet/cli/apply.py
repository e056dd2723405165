"""``modelfleet apply -f fleet.yaml``: sites, policies, overrides, deployments, pipelines and
schedules as code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    say,
    styled,
)
from modelfleet.cli.policy import read_yaml
from modelfleet.errors import InvalidInput

_MARK = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="fleet.yaml")],
    prune: Annotated[bool, typer.Option(help="Remove what the file no longer declares.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show the diff only.")] = False,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the hub match the file; shows the diff; applying twice changes nothing.

    A deployment whose sites do not run the file's version (its last rollout failed,
    was aborted or rolled back) is a difference too: the dry run says which version runs,
    and applying starts a new rollout to the file's version. `pipelines:` and `schedules:`
    hold the closed loop (docs/pipelines.md); --prune removes those only when the file has
    the section.

    \b
    Examples:
      modelfleet apply -f fleet.yaml --dry-run
      modelfleet apply -f fleet.yaml
      modelfleet apply -f fleet.yaml --prune   # also remove what the file dropped
    """
    doc = read_yaml(file)
    if not isinstance(doc, dict):
        raise InvalidInput(
            f"{file} must hold a mapping (sites, policies, deployments, pipelines, schedules)"
        )
    with client(hub, token) as hc:
        result = hc.apply_fleet(doc, prune=prune, dry_run=dry_run)
    if json_out:
        print_json(result)
        return
    for c in result.changes:
        text = f" {c.kind} {c.name}"
        if c.detail:
            text += f"  {c.detail}"
        if c.rollout:
            text += f"  (rollout {c.rollout})"
        say(styled(_MARK.get(c.action, ("?", "")), text))
        if c.enrollment_token:
            say(f"    enrollment token (shown once): {c.enrollment_token}")
    if not result.changed:
        say("no changes")
    elif dry_run:
        say("dry run: nothing changed")
