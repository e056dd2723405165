"""Re-signing versions and retiring signing keys safely.

A site refuses a manifest whose key is retired. Retiring a key that still signs a
registered version would therefore make that version unservable at every site the moment
the site hears of the retirement, and unrestorable from its cache after a restart. So a
key is retired only once no version depends on it: `hub key resign` first re-signs every
version's manifest with the current key (the manifest's text changes only in its
``key_id``; name, digest, lineage and created_at stay), in one transaction that bumps the
desired-state revision of every site assigned one of them, so their agents take the new
signatures with their next poll and keep serving throughout.

Both act on the data directory and the hub's store directly (like `hub key rotate`), with
the hub running or stopped, and write an audit entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from modelfleet.errors import Conflict, SignatureInvalid
from modelfleet.hub.keys import HubKeys
from modelfleet.hub.store import Store
from modelfleet.hub.store.records.models import VersionRecord
from modelfleet.registry.keyset import KeyEntry, KeySet
from modelfleet.registry.manifest import sign_manifest

#: How many versions a refusal names before it says "and N more".
_NAMED = 10


@dataclass(frozen=True)
class Resigned:
    versions: list[str]  # "name:version" re-signed
    sites: list[str]  # sites whose desired state changed with them
    key_id: str  # the key that signed them


def _signer(version: VersionRecord, keys: KeySet) -> str | None:
    try:
        return keys.verify(version.manifest, version.signature)
    except SignatureInvalid:
        return None


def versions_signed_by(store: Store, keys: HubKeys, kid: str) -> list[str]:
    """``name:version`` of every registered version whose manifest ``kid`` signed."""
    entry = next((e for e in keys.entries() if e.id == kid), None)
    if entry is None:
        return []
    only = KeySet({kid: entry.public_key})
    return [
        f"{v.model}:{v.version}"
        for model in store.models.list_models()
        for v in store.models.list_versions(model.name)
        if _signer(v, only) == kid
    ]


def resign_versions(store: Store, keys: HubKeys, actor: str) -> Resigned:
    """Re-sign every version not signed by the current key; audited as ``key.resign``."""
    keys.refresh()
    current, current_id = keys.current, keys.current_id
    mine = KeySet({current_id: current.public_key()})

    def reseal(version: VersionRecord) -> tuple[str, str] | None:
        if _signer(version, mine) == current_id:
            return None
        manifest = json.loads(version.manifest)
        manifest["key_id"] = current_id
        return sign_manifest(manifest, current)

    changed, sites = store.models.reseal(reseal)
    names = [f"{v.model}:{v.version}" for v in changed]
    store.audit.record(
        actor=actor,
        action="key.resign",
        object=current_id,
        outcome="ok",
        detail=f"{len(names)} versions re-signed ({_named(names) or 'none'}); "
        f"{len(sites)} sites' desired state changed",
    )
    return Resigned(names, sites, current_id)


def retire_key(store: Store, keys: HubKeys, kid: str, actor: str) -> KeyEntry:
    """Retire ``kid`` unless a registered version is signed by it alone (``Conflict``,
    naming them); audited as ``key.retire`` either way."""
    keys.refresh()
    dependent = versions_signed_by(store, keys, kid)
    if dependent:
        message = (
            f"signing key {kid} still signs {len(dependent)} registered version(s): "
            f"{_named(dependent)}. Sites would refuse them once it is retired; re-sign them "
            "with the current key first: modelfleet hub key resign"
        )
        store.audit.record(
            actor=actor, action="key.retire", object=kid, outcome="conflict", detail=message
        )
        raise Conflict(message)
    entry = keys.retire(kid)
    store.audit.record(
        actor=actor,
        action="key.retire",
        object=kid,
        outcome="ok",
        detail=f"key set revision {keys.revision}",
    )
    return entry


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMED])
    return shown + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")
