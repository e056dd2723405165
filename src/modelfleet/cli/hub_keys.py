"""``modelfleet hub key list|rotate|retire``: the hub's signing key set, on its data directory.

These act on the files, not through the API: whoever holds the data directory holds the
keys (the root of trust), and a key must be rotatable while no hub runs. A running hub
notices the change within a second; sites receive the new set, signed and endorsed by the
key they already trust, with their next desired state, so none of them re-enrolls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from modelfleet.cli.common import JsonOpt, console, print_json, table, when
from modelfleet.cli.hub import DataDirOpt
from modelfleet.settings import default_data_dir

if TYPE_CHECKING:
    from modelfleet.hub.keys import HubKeys
    from modelfleet.registry.keyset import KeyEntry

app = typer.Typer(
    help="The hub's signing keys: list, rotate (sites roll over by themselves), retire.",
    no_args_is_help=True,
)


def _keys(data_dir: DataDirOpt) -> HubKeys:
    from modelfleet.hub.datadir import DataDir

    root = DataDir((data_dir or default_data_dir()).expanduser().resolve())
    root.read_config()  # one clear line when `hub init` never ran here
    return root.keys()


def _row(entry: KeyEntry, current: str) -> dict[str, object]:
    return {
        "id": entry.id,
        "current": entry.id == current,
        "retired": entry.retired,
        "created_at": entry.to_dict()["created_at"],
        "endorsed_by": entry.endorsed_by,
    }


@app.command("list")
def list_keys(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """The key set: which key signs now, which still verify, which are retired.

    Example: modelfleet hub key list --data-dir /var/lib/modelfleet/hub
    """
    keys = _keys(data_dir)
    rows = [_row(e, keys.current_id) for e in keys.entries()]
    if as_json:
        print_json({"revision": keys.revision, "current": keys.current_id, "keys": rows})
        return
    table(
        f"signing keys (set revision {keys.revision})",
        ["id", "state", "created", "endorsed by"],
        [
            [
                r["id"],
                "current" if r["current"] else "retired" if r["retired"] else "verifies",
                when(r["created_at"]),
                r["endorsed_by"] or "-",
            ]
            for r in rows
        ],
    )


@app.command()
def rotate(data_dir: DataDirOpt = None) -> None:
    """Make a new signing key, endorsed by the current one; new versions are signed with it.

    Versions signed before keep verifying until their key is retired. Sites take the new
    set with their next desired state (no re-enrollment).

    Example: modelfleet hub key rotate --data-dir /var/lib/modelfleet/hub
    """
    keys = _keys(data_dir)
    before = keys.current_id
    entry = keys.rotate()
    console.print(
        f"signing key [bold]{entry.id}[/bold] is current (endorsed by {before}); "
        f"key set revision {keys.revision}. Retire {before} once every version it signed is "
        f"re-signed or retired: modelfleet hub key retire {before}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def retire(
    key_id: Annotated[str, typer.Argument(help="The id of a key that is no longer current.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Stop trusting an old key: sites refuse manifests it signed from their next update.

    Example: modelfleet hub key retire 3f9a0c1e2b4d5a6f --data-dir /var/lib/modelfleet/hub
    """
    keys = _keys(data_dir)
    entry = keys.retire(key_id)
    console.print(
        f"signing key {entry.id} retired; key set revision {keys.revision}", highlight=False
    )
