"""``modelfleet audit``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    table,
    when,
)


def audit(
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. operator:ci.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. model.push.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the audit log: who changed what, when, and how it ended."""
    with client(hub, token) as hc:
        entries = hc.list_audit(limit=limit, actor=actor, action=action)
    if json_out:
        print_json(entries)
        return
    rows = [(when(e.at), e.actor, e.action, e.object, e.outcome, e.detail) for e in entries]
    table(None, ["TIME", "ACTOR", "ACTION", "OBJECT", "OUTCOME", "DETAIL"], rows)
