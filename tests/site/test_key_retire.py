"""Retiring a signing key safely: refused while a version depends on it; `hub key resign`
re-signs every version, the sites assigned them get a new desired state and keep the new
signature, and a site restarted after the retirement still verifies its cache."""

from __future__ import annotations

import json
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.keys import HubKeys
from modelfleet.hub.store import open_store
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.site.test_key_rollover import wait_for


def _keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", "hub", "key", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _serving(site: SiteProcess, token: str) -> int | None:
    context = ssl.create_default_context(cafile=str(site.ca_file))
    headers = {"Authorization": f"Bearer {token}"}  # sites need an infer token
    with httpx.Client(verify=context, timeout=5, headers=headers) as client:
        answer = client.get(f"{site.url}/v2/models/pump/ready")
    return int(answer.json()["version"]) if answer.status_code == 200 else None


def _kept_key_id(site: SiteProcess) -> str | None:
    """The key id of the manifest the site keeps as pump's last good version."""
    with sqlite3.connect(f"file:{site.state_dir / 'state.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT manifest FROM good_models WHERE name = 'pump'").fetchone()
    return None if row is None else str(json.loads(row[0])["key_id"])


def test_rotate_mid_assignment_resign_retire_and_the_site_keeps_verifying(
    tmp_path: Path, tiny_onnx: Callable[..., Path]
) -> None:
    root = tmp_path / "hub"
    init = init_hub(root)
    old_key = init.key_id
    hub = HubProcess(root, tls=True).start()
    admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
    store = open_store(init.db_url)
    site: SiteProcess | None = None
    try:
        admin.push(tiny_onnx(offset=1.0), "pump")
        admin.push(tiny_onnx(offset=2.0), "pump")
        infer = admin.create_token("retire-test", "infer").token
        token = admin.add_site("plant-a", {}).enrollment_token
        site = SiteProcess(tmp_path / "plant-a", hub.url, str(token)).start(60)
        admin.assign("plant-a", "pump:1")
        wait_for(lambda: _serving(site, infer) == 1, "plant-a on pump:1")

        # Rotate in the middle of an assignment: pump:2 (signed by the old key) is on its way.
        admin.assign("plant-a", "pump:2")
        rotated = _keys_cli(root, "rotate")
        assert rotated.returncode == 0, rotated.stderr
        new_key = HubKeys(root).current_id
        wait_for(lambda: _serving(site, infer) == 2, "plant-a on pump:2 after the rotation")
        assert _kept_key_id(site) == old_key

        # Retiring the old key now would strand both versions: refused, naming them.
        refused = _keys_cli(root, "retire", old_key)
        assert refused.returncode == 1
        assert "pump:1" in refused.stderr
        assert "pump:2" in refused.stderr
        assert "hub key resign" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert old_key in {e.id for e in HubKeys(root).entries() if not e.retired}

        revision = store.assignments.revision("plant-a")
        resigned = _keys_cli(root, "resign", "--json")
        assert resigned.returncode == 0, resigned.stderr
        answer = json.loads(resigned.stdout)
        assert answer["key_id"] == new_key
        assert answer["versions"] == ["pump:1", "pump:2"]
        assert answer["sites"] == ["plant-a"]
        assert store.assignments.revision("plant-a") > revision  # a new ETag for the site
        for version in (1, 2):
            manifest = json.loads(admin.resolve(f"pump:{version}").manifest)
            assert manifest["key_id"] == new_key
        # The site takes the new signature without reloading; nothing to re-sign twice.
        wait_for(lambda: _kept_key_id(site) == new_key, "plant-a to keep the new signature")
        assert _serving(site, infer) == 2
        again = _keys_cli(root, "resign", "--json")
        assert json.loads(again.stdout)["versions"] == []

        retired = _keys_cli(root, "retire", old_key)
        assert retired.returncode == 0, retired.stderr

        def trusts_only_the_new_key() -> bool:
            held = json.loads((site.state_dir / "tls" / "keyset.json").read_text())
            return set(held["keys"]) == {new_key}

        wait_for(trusts_only_the_new_key, "plant-a to drop the retired key")
        assert _serving(site, infer) == 2

        # Restarted after the retirement, the site verifies its cached pump:2 with the new
        # key only, before it hears from the hub.
        site.stop()
        site.start(60)
        wait_for(lambda: _serving(site, infer) == 2, "plant-a serving pump:2 after a restart")
        log = (tmp_path / "plant-a.log").read_text()
        assert "not restored" not in log
        assert "Traceback" not in log
        actions = [(a.action, a.outcome) for a in admin.list_audit(limit=20)]
        assert ("key.retire", "conflict") in actions
        assert ("key.resign", "ok") in actions
        assert ("key.retire", "ok") in actions
        assert all(a.actor.startswith("local:") for a in admin.list_audit(action="key.resign"))
    finally:
        if site is not None:
            site.stop()
        admin.close()
        store.close()
        hub.stop()
