"""The hub's signing key set on disk: create, rotate, retire, legacy directories."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.keys import HubKeys
from modelfleet.registry.keyset import KeySet, accept_keyset
from modelfleet.registry.signing import generate_signing_key, key_id


def test_rotate_and_retire_are_accepted_by_a_site_that_pinned_the_first_key(
    tmp_path: Path,
) -> None:
    keys = HubKeys.create(tmp_path)
    first = keys.current_id
    assert stat.S_IMODE((tmp_path / "keys" / f"{first}.pem").stat().st_mode) == 0o600
    site = accept_keyset(KeySet.of(keys.current), keys.signed().text, keys.signed().signature)
    new = keys.rotate()
    assert (keys.current_id, keys.revision, new.endorsed_by) == (new.id, 2, first)
    site = accept_keyset(site, keys.signed().text, keys.signed().signature)
    assert site.ids() == sorted([first, new.id])
    keys.retire(first)
    site = accept_keyset(site, keys.signed().text, keys.signed().signature)
    assert site.ids() == [new.id]
    with pytest.raises(Conflict, match="current signing key"):
        keys.retire(new.id)
    with pytest.raises(NotFound):
        keys.retire("nope")
    # Another process (replica) sees the rotation.
    other = HubKeys(tmp_path)
    assert other.current_id == new.id
    keys.rotate()
    assert other.refresh() is True
    assert other.current_id == keys.current_id
    assert other.refresh() is False
    with pytest.raises(Conflict):
        HubKeys.create(tmp_path)


def test_a_one_key_directory_reads_as_a_set_and_moves_on_first_rotation(tmp_path: Path) -> None:
    legacy = generate_signing_key(tmp_path / "signing_key.pem")
    keys = HubKeys(tmp_path)
    assert keys.current_id == key_id(legacy)
    pinned = KeySet.of(legacy)
    keys.rotate()
    assert (tmp_path / "keys" / f"{key_id(legacy)}.pem").exists()
    trusted = accept_keyset(pinned, keys.signed().text, keys.signed().signature)
    assert len(trusted.ids()) == 2
    with pytest.raises(NotFound):
        HubKeys(tmp_path / "empty")
