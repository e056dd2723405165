"""``modelfleet token create|ls|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer

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

app = typer.Typer(help="Create, list and revoke API tokens (admin).", no_args_is_help=True)


@app.command()
def create(
    role: Annotated[
        str,
        typer.Option(
            help="admin, operator, viewer, or infer (calls models at sites and the gateway)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="A label for the token (default: the role).")
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire after this many days (default: never).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            metavar="NAME",
            help="Role infer: a model the token may call (repeat; default: every model).",
        ),
    ] = None,
    sites: Annotated[
        str | None,
        typer.Option(
            "--sites",
            metavar="SELECTOR",
            help="Role infer: the sites it may call, e.g. 'jurisdiction in (EU,UK)' "
            "(default: every site).",
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once."""
    with client(hub, token) as hc:
        created = hc.create_token(
            name or role,
            role,
            expires_in_days=expires_in_days,
            models=model or None,
            site_selector=sites,
        )
    if json_out:
        print_json(created)
        return
    console.print(f"token {created.id} ({created.name}, role {created.role}) — shown once:")
    typer.echo(created.token)


@app.command("ls")
def list_tokens(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """List tokens (secrets are never shown again)."""
    with client(hub, token) as hc:
        tokens = hc.list_tokens()
    if json_out:
        print_json(tokens)
        return
    rows = [
        (
            t.id,
            t.name,
            t.role,
            t.site,
            when(t.created_at),
            when(t.expires_at) if t.expires_at else "never",
            "revoked " + when(t.revoked_at) if t.revoked_at else "active",
        )
        for t in tokens
    ]
    table(None, ["ID", "NAME", "ROLE", "SITE", "CREATED", "EXPIRES", "STATE"], rows)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id from `token ls`.")],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Revoke a token: it stops working on the next request."""
    with client(hub, token) as hc:
        hc.revoke_token(token_id)
    console.print(f"revoked {token_id}")
