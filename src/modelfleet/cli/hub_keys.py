"""``modelfleet hub key list|rotate|resign|retire``: the hub's signing key set, on its data
directory.

These act on the files (and, for resign and retire, the hub's store), not through the API:
whoever holds the data directory holds the keys (the root of trust), and a key must be
rotatable while no hub runs. A running hub notices the change within a second; sites
receive the new set, signed and endorsed by the key they already trust, with their next
desired state, so none of them re-enrolls. A key is retired only once no registered
version depends on it (`resign` first; see :mod:`modelfleet.hub.key_lifecycle`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelfleet.cli.common import Col, JsonOpt, print_json, say, table, when
from modelfleet.cli.hub import DataDirOpt
from modelfleet.settings import default_data_dir

DbOpt = Annotated[
    str | None,
    typer.Option(help="Override the DB URL recorded by `hub init` (as `hub serve`)."),
]

if TYPE_CHECKING:
    from modelfleet.hub.keys import HubKeys
    from modelfleet.registry.keyset import KeyEntry

app = typer.Typer(
    help="The hub's signing keys: list, rotate (sites roll over by themselves), re-sign "
    "every version with the current key, retire.",
    no_args_is_help=True,
)


def _root(data_dir: DataDirOpt) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def _keys(data_dir: DataDirOpt) -> HubKeys:
    from modelfleet.hub.datadir import DataDir

    root = DataDir(_root(data_dir))
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

    \b
    Examples:
      modelfleet hub key list --data-dir ./hub
    """
    keys = _keys(data_dir)
    rows = [_row(e, keys.current_id) for e in keys.entries()]
    if as_json:
        print_json({"revision": keys.revision, "current": keys.current_id, "keys": rows})
        return
    table(
        f"signing keys (set revision {keys.revision})",
        [Col("ID", keep=True), "STATE", "CREATED", "ENDORSED BY"],
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
def rotate(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Make a new signing key, endorsed by the current one; new versions are signed with it.

    Versions signed before keep verifying until their key is retired. Sites take the new
    set with their next desired state (no re-enrollment).

    \b
    Examples:
      modelfleet hub key rotate --data-dir ./hub
    """
    keys = _keys(data_dir)
    before = keys.current_id
    entry = keys.rotate()
    _tell_rotated(data_dir, db, entry.id, before, keys.revision)
    say(
        f"signing key {entry.id} is current (endorsed by {before}); "
        f"key set revision {keys.revision}. To retire {before}: modelfleet hub key resign, "
        f"then modelfleet hub key retire {before}",
    )


def _tell_rotated(data_dir: DataDirOpt, db: str | None, kid: str, before: str, rev: int) -> None:
    """The ``key.rotated`` event, in the hub's store (a running hub delivers it); the
    rotation stands even when the store cannot be reached (said, not raised)."""
    from modelfleet.errors import ModelfleetError
    from modelfleet.hub.bootstrap import open_local_store
    from modelfleet.hub.events import Events

    try:
        store = open_local_store(_root(data_dir), db)
    except ModelfleetError as exc:
        say(f"warning: key.rotated event not recorded: {exc.message}")
        return
    try:
        Events(store).key_rotated(kid, before, rev)
    finally:
        store.close()


@app.command()
def resign(data_dir: DataDirOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Re-sign every version's manifest with the current key (after a rotation).

    Only the manifest's key id and signature change. The sites assigned a re-signed
    version get a new desired state (its revision changes) and take the new signature
    without reloading the model. Audited (key.resign). Then the old key can be retired.

    \b
    Examples:
      modelfleet hub key resign --data-dir ./hub
    """
    from modelfleet.hub.bootstrap import local_actor, open_local_store
    from modelfleet.hub.key_lifecycle import resign_versions

    keys = _keys(data_dir)
    store = open_local_store(_root(data_dir), db)
    try:
        result = resign_versions(store, keys, local_actor())
    finally:
        store.close()
    if as_json:
        print_json({"key_id": result.key_id, "versions": result.versions, "sites": result.sites})
        return
    say(
        f"{len(result.versions)} version(s) re-signed with {result.key_id}; "
        f"{len(result.sites)} site(s) get the new signatures with their next desired state",
    )


@app.command()
def retire(
    key_id: Annotated[str, typer.Argument(help="The id of a key that is no longer current.")],
    data_dir: DataDirOpt = None,
    db: DbOpt = None,
) -> None:
    """Stop trusting an old key: sites refuse manifests it signed from their next update.

    Refused while a registered version is signed by that key alone (the refusal names
    them): run `modelfleet hub key resign` first. Audited (key.retire).

    \b
    Examples:
      modelfleet hub key retire 3f2a9c1e --data-dir ./hub
    """
    from modelfleet.hub.bootstrap import local_actor, open_local_store
    from modelfleet.hub.key_lifecycle import retire_key

    keys = _keys(data_dir)
    store = open_local_store(_root(data_dir), db)
    try:
        entry = retire_key(store, keys, key_id, local_actor())
    finally:
        store.close()
    say(f"signing key {entry.id} retired; key set revision {keys.revision}")
