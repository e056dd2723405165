"""``modelfleet token create|ls|revoke``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    ago,
    client,
    print_json,
    say,
    table,
    when,
)

if TYPE_CHECKING:
    from modelfleet.api import Token

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
    ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Lifetime: 12h, 30d, 2w... (default: the hub's, 30d for admin, 90d for "
            "others; at most its maximum, 365d unless configured).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            metavar="MODEL",
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
    """Create a token; its secret is printed once.

    \b
    Examples:
      modelfleet token create --role operator --name ci --ttl 30d
      modelfleet token create --role infer --model machine-health --sites 'jurisdiction=EU'
    """
    with client(hub, token) as hc:
        created = hc.create_token(
            name or role,
            role,
            ttl=ttl,
            models=model or None,
            site_selector=sites,
        )
    if json_out:
        print_json(created)
        return
    expiry = f", expires {when(created.expires_at)} UTC" if created.expires_at else ""
    say(f"token {created.id} ({created.name}, role {created.role}{expiry}) — shown once:")
    typer.echo(created.token)


@app.command("ls")
def list_tokens(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """List tokens with their expiry and last use (secrets are never shown again).

    LAST USED is when the hub last authenticated the token, recorded at most once a
    minute per token (so it may lag by up to a minute). IDs are printed whole, to copy
    into `token revoke`; EXPIRES is a date (UTC); --json has the instants and creation.

    \b
    Examples:
      modelfleet token ls
    """
    with client(hub, token) as hc:
        tokens = hc.list_tokens()
    now = datetime.now(UTC)
    if json_out:
        print_json(tokens)
        return
    rows = [
        (
            t.id,
            t.name,
            t.role,
            t.site,
            _day(t.expires_at) if t.expires_at else "never",
            ago(t.last_used_at),
            _state(t, now),
        )
        for t in tokens
    ]
    table(
        None,
        [
            Col("ID", keep=True),
            Col("NAME", free=True),
            "ROLE",
            Col("SITE", free=True),
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        rows,
        empty="no tokens yet: modelfleet token create --role operator --name ci",
    )


def _day(value: datetime | None) -> str:
    """A date is enough for expiry and revocation (``--json`` has the instant)."""
    return when(value)[:10]


def _state(token: Token, now: datetime) -> str:
    if token.revoked_at:
        return "revoked " + _day(token.revoked_at)
    if token.expires_at and token.expires_at <= now:
        return "expired"
    return "active"


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id from `token ls`.")],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Revoke a token: it stops working on the next request.

    \b
    Examples:
      modelfleet token revoke tok_0123abcd
    """
    with client(hub, token) as hc:
        hc.revoke_token(token_id)
    say(f"revoked {token_id}")
