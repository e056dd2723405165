"""``modelfleet hub token recover``: break-glass admin access from the hub's data directory.

Not an API call: it is for when no admin token is left (all revoked, expired or lost), so
it cannot ask the hub for permission. It writes the new token into the hub's store itself;
reading the data directory (which holds the signing keys and the CA) is the authority.
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelfleet.cli.common import JsonOpt, print_json, say
from modelfleet.cli.hub import DataDirOpt
from modelfleet.settings import default_data_dir

app = typer.Typer(help="Break-glass admin access on the hub's machine.", no_args_is_help=True)


@app.command()
def recover(
    data_dir: DataDirOpt = None,
    name: Annotated[str, typer.Option(help="A label for the new admin token.")] = (
        "recovered-admin"
    ),
    ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Lifetime: 1h, 12h, 30d... (default: the admin default, 30 days).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="Override the DB URL recorded by `hub init` (as `hub serve`)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Mint a new admin token straight in the hub's store, print it once, audit it.

    Works with the hub stopped or running (SQLite or PostgreSQL: the store `hub serve`
    uses); run it as the user who owns the data directory. The audit log names the local
    user and machine (action token.recover).

    \b
    Examples:
      modelfleet hub token recover --data-dir ./hub --ttl 1h
    """
    from modelfleet.hub.bootstrap import recover_admin

    root = (data_dir or default_data_dir()).expanduser().resolve()
    result = recover_admin(root, name=name, ttl=ttl, db=db)
    if json_out:
        print_json(
            {
                "id": result.token_id,
                "name": result.name,
                "role": "admin",
                "expires_at": result.expires_at.isoformat(),
                "token": result.token,
            }
        )
        return
    say(
        f"admin token {result.token_id} ({result.name}, expires "
        f"{result.expires_at:%Y-%m-%d %H:%M:%S} UTC) minted in {result.db_url} and audited "
        "— shown once:",
    )
    typer.echo(result.token)
