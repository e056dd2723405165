"""``modelfleet audit``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    table,
    when,
)


def audit(
    limit: Annotated[
        int, typer.Option(help="How many entries, newest first.", min=1, max=10_000)
    ] = 50,
    actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. operator:ci.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. model.push.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the audit log: who changed what, when, and how it ended.

    One line per entry, cut to the terminal's width (actor, object and detail first);
    --json has them whole.

    \b
    Examples:
      modelfleet audit --limit 20 --action model.push
    """
    with client(hub, token) as hc:
        entries = hc.list_audit(limit=limit, actor=actor, action=action)
    if json_out:
        print_json(entries)
        return
    rows = [
        (when(e.at), e.actor, e.action, e.object, e.outcome, " ".join(str(e.detail or "").split()))
        for e in entries
    ]
    filtered = " matching --actor/--action" if actor or action else ""
    table(
        None,
        [
            "TIME",
            Col("ACTOR", free=True),
            "ACTION",
            Col("OBJECT", free=True),
            "OUTCOME",
            Col("DETAIL", free=True),
        ],
        rows,
        empty=f"no audit entries{filtered} yet: every change through the hub is recorded here",
        cut_hint="audit --json prints every entry whole",
    )
