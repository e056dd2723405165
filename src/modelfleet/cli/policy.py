"""``modelfleet policy apply|ls|rm``: residency and spread rules."""

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
    console,
    jsonable,
    print_json,
    table,
)
from modelfleet.hub.policy import parse_policy_document
from modelfleet.yamlfile import load_yaml

app = typer.Typer(help="Governance rules: residency and spread.", no_args_is_help=True)


def read_yaml(path: Path) -> object:
    return load_yaml(path, "file")


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="policy.yaml")],
    prune: Annotated[bool, typer.Option(help="Remove rules the file does not list.")] = False,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or update every rule in the file (validated locally first)."""
    rules = parse_policy_document(read_yaml(file))
    with client(hub, token) as hc:
        result = hc.apply_policies(
            [{"name": r.name, "kind": r.kind, **r.spec()} for r in rules], prune=prune
        )
    if json_out:
        print_json(result)
        return
    for change in result.changes:
        console.print(f"policy {change.policy}: {change.action}", highlight=False)
    if not result.changed:
        console.print("no changes")


@app.command("ls")
def ls(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List the rules."""
    with client(hub, token) as hc:
        rows = hc.list_policies()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["name", "kind", "rule"],
        [
            [
                p["name"],
                p["kind"],
                f"data from {','.join(p.get('regions') or p.get('training_regions') or [])} "
                f"-> only where {p['label']} in "
                f"({','.join(p['allowed_jurisdictions'])})"
                if p["kind"] == "residency"
                else f">= {p['min_distinct']} distinct {p['label']}"
                + (f" for {','.join(p['models'])}" if p.get("models") else ""),
            ]
            for p in jsonable(rows)  # a rule's fields depend on its kind: read as JSON
        ],
    )


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Policy name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Remove a rule."""
    with client(hub, token) as hc:
        hc.remove_policy(name)
    console.print(f"removed policy {name}")
