"""Signing-key rotation reaches sites with their desired state: accepted only through an
endorsement by a key the site trusts; a rotation on a running hub, mid-operation, leaves
the sites on the versions the old key signed and rolls the new key's versions out."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.keys import HubKeys
from modelfleet.hub_client import HubClient
from modelfleet.registry.keyset import KeyEntry, KeySet, sign_keyset
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.site.cache import BlobCache
from modelfleet.site.floors import DesiredStateFloor
from modelfleet.site.identity import SiteIdentity
from modelfleet.site.reconciler import Reconciler
from modelfleet.site.repository import ModelRepository
from modelfleet.site.state import SiteState
from tests.waiting import wait_for


def reconciler(tmp_path: Path, trusted: KeySet, saved: list[KeySet]) -> Reconciler:
    def no_download(_path: str, _partial: Path, _size: int) -> None:
        raise AssertionError("nothing to download")

    state = SiteState(tmp_path / "state.db")
    return Reconciler(
        state=state,
        cache=BlobCache(tmp_path / "cache"),
        repository=ModelRepository(),
        public_key=trusted,
        download=no_download,
        floors=DesiredStateFloor.load(state, "plant-a"),
        on_keys=saved.append,
    )


def test_the_reconciler_takes_an_endorsed_rotation_and_refuses_the_rest(tmp_path: Path) -> None:
    keys = HubKeys.create(tmp_path / "hub")
    pinned = keys.trusted()
    saved: list[KeySet] = []
    site = reconciler(tmp_path, pinned, saved)

    # A key nobody endorsed, signing its own set at a higher revision: refused.
    intruder = Ed25519PrivateKey.generate()
    forged = sign_keyset([KeyEntry(intruder.public_key(), datetime.now(UTC))], intruder, 9)
    text, signature = forged
    site.apply({"revision": 1, "models": [], "keyset": {"text": text, "signature": signature}})
    assert site.public_key == pinned
    assert saved == []

    # The hub's own rotation: the new key endorsed by the pinned one.
    before = keys.signed()
    keys.rotate()
    rotated = keys.signed()
    offered = {"text": rotated.text, "signature": rotated.signature}
    site.apply({"revision": 1, "models": [], "keyset": offered})
    assert isinstance(site.public_key, KeySet)
    assert set(site.public_key.ids()) == {e.id for e in keys.entries()}
    assert [k.revision for k in saved] == [rotated.revision]

    # The set from before the rotation, replayed: a rollback, refused.
    old = {"text": before.text, "signature": before.signature}
    site.apply({"revision": 1, "models": [], "keyset": old})
    assert site.public_key.revision == rotated.revision
    assert len(saved) == 1
    site.state.close()


def test_rotating_on_a_running_hub_keeps_sites_serving_and_new_versions_verifying(
    tmp_path: Path, tiny_onnx: Callable[..., Path]
) -> None:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub", tls=True).start()
    admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
    sites: list[SiteProcess] = []
    try:
        admin.push(tiny_onnx(offset=1.0), "pump")
        auth = {"Authorization": f"Bearer {admin.create_token('t', 'infer').token}"}
        for name in ("plant-a", "plant-b"):
            token = admin.request(
                "POST", "/api/v1/sites", json={"name": name, "labels": {}}
            ).json()["enrollment_token"]
            sites.append(SiteProcess(tmp_path / name, hub.url, str(token)).start(60))
            admin.assign(name, "pump:1")

        def serving(site: SiteProcess) -> int | None:
            context = ssl.create_default_context(cafile=str(site.ca_file))
            with httpx.Client(verify=context, timeout=5, headers=auth) as client:
                answer = client.get(f"{site.url}/v2/models/pump/ready")
            return int(answer.json()["version"]) if answer.status_code == 200 else None

        for site in sites:
            wait_for(lambda site=site: serving(site) == 1, f"{site.state_dir.name} on pump:1")

        # The operator rotates while the hub runs and the sites serve.
        rotate = subprocess.run(
            [sys.executable, "-m", "modelfleet", "hub", "key", "rotate",
             "--data-dir", str(tmp_path / "hub")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert rotate.returncode == 0, rotate.stderr
        new_key = HubKeys(tmp_path / "hub").current_id
        assert new_key != init.key_id

        # A version signed by the new key rolls out to sites that enrolled under the old one.
        pushed = admin.push(tiny_onnx(offset=2.0), "pump")
        assert pushed.version == 2
        assert json.loads(pushed.manifest)["key_id"] == new_key  # sites must learn it first
        for site in sites:
            admin.assign(site.state_dir.name, "pump:2")
        for site in sites:
            wait_for(lambda site=site: serving(site) == 2, f"{site.state_dir.name} on pump:2")
            held = SiteIdentity(site.state_dir).keys()
            assert held is not None
            assert {init.key_id, new_key} <= set(held.ids())
            assert "Traceback" not in site.state_dir.with_suffix(".log").read_text()
    finally:
        for site in sites:
            site.stop()
        admin.close()
        hub.stop()
