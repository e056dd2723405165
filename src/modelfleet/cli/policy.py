"""``modelfleet policy apply|ls|rm``: residency and spread rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    jsonable,
    print_json,
    say,
    table,
)
from modelfleet.yamlfile import load_yaml

app = typer.Typer(help="Governance rules: residency and spread.", no_args_is_help=True)


def read_yaml(path: Path) -> object:
    return load_yaml(path, "file")


@app.command("apply")
def apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", metavar="FILE", help="The policy file (YAML).")
    ],
    prune: Annotated[bool, typer.Option(help="Remove rules the file does not list.")] = False,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or update every rule in the file (validated locally first); says per rule
    whether it was created, changed or left unchanged.

    \b
    The file holds `policies:` and a list of rules, each with a unique name and a kind:
      policies:
        - name: eu-data-stays-in-eu
          kind: residency
          regions: [EU]                # data from these regions (EU, or eu-west: a site
                                       # region the sites' labels put in a jurisdiction)...
          allowed_jurisdictions: [EU]  # ...stays where the label is one of these: models
                                       # trained on it run there, requests with it go there
                                       # (training_regions: the older name of regions)
          label: jurisdiction          # the site label compared (default jurisdiction)
        - name: two-providers
          kind: spread
          label: provider              # a deployment covers at least min_distinct
          min_distinct: 2              # values of this site label
          models: [pump]               # optional; default every model

    \b
    Examples:
      modelfleet policy apply -f policy.yaml
      modelfleet policy apply -f policy.yaml --prune
    """
    # Imported here: the hub's policy module pulls in its store (SQLAlchemy) and the
    # residency rules (NumPy), half a second that every other command would pay at start.
    from modelfleet.hub.policy import parse_policy_document

    rules = parse_policy_document(read_yaml(file))
    with client(hub, token) as hc:
        before = {str(p["name"]) for p in jsonable(hc.list_policies())}
        result = hc.apply_policies(
            [{"name": r.name, "kind": r.kind, **r.spec()} for r in rules], prune=prune
        )
    if json_out:
        print_json(result)
        return
    changed = {c.policy for c in result.changes if c.action != "delete"}
    for rule in rules:
        if rule.name not in changed:
            verdict = "unchanged"
        else:
            verdict = "changed" if rule.name in before else "created"
        say(f"policy {rule.name}: {verdict}")
    for change in result.changes:
        if change.action == "delete":
            say(f"policy {change.policy}: removed (not in the file, --prune)")
    if not result.changed:
        say("no changes")


@app.command("ls")
def ls(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List the rules.

    \b
    Examples:
      modelfleet policy ls
    """
    with client(hub, token) as hc:
        rows = hc.list_policies()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        [Col("NAME", keep=True), "KIND", "RULE"],
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
        empty="no policies yet: modelfleet policy apply -f policy.yaml (see policy apply --help)",
    )


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Policy name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Remove a rule.

    \b
    Examples:
      modelfleet policy rm eu-data-stays-in-eu
    """
    with client(hub, token) as hc:
        hc.remove_policy(name)
    say(f"removed policy {name}")
