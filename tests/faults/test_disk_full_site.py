"""Full disks at a site (issue #20): real small file systems (tmpfs), real hub and site.

The site's state directory is a tmpfs of its own (``state.db``, ``telemetry.db``) and its
model cache (``cache/``) another, mounted inside it. A filler file takes every free page
("the disk is full"); deleting it returns the space. While a store is full the site must
keep answering inference, count what it could not keep (``/metrics`` and its report to the
hub), log one warning per episode; once space returns, writes resume, a pending download
completes, and ``state.db`` passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import write_tiny_onnx
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root (CI is)")

SITE_ENV = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
}


def _mount(directory: Path, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    subprocess.run(command, check=True)


def _umount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Take every free page of the file system holding ``directory``."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


@dataclass
class Fleet:
    hub: HubProcess
    admin: HubClient
    site: SiteProcess
    infer_token: str
    log: Path

    @property
    def state_dir(self) -> Path:
        return self.site.state_dir

    def http(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.site.ca_file))
        headers = {"Authorization": f"Bearer {self.infer_token}"}
        return httpx.Client(verify=context, timeout=10, headers=headers)

    def infer(self) -> int:
        """One inference call that must succeed; answers the version that served it."""
        body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
        with self.http() as client:
            answer = client.post(f"{self.site.url}/v2/models/pump/infer", json=body)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["model_version"])

    def metric(self, name: str, store: str) -> float:
        with self.http() as client:
            text = client.get(f"{self.site.url}/metrics").text
        found = re.search(rf'^{name}\{{store="{store}"\}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else -1.0

    def lost(self, store: str) -> float:
        return self.metric("modelfleet_site_storage_lost_total", store)

    def full(self, store: str) -> float:
        return self.metric("modelfleet_site_storage_full", store)

    def error_code(self) -> str | None:
        error = self.model().get("error")
        return error.get("code") if isinstance(error, dict) else None

    def storage(self) -> dict[str, Any]:
        storage = self.admin.get_site("plant").storage
        return storage if isinstance(storage, dict) else {}

    def model(self) -> dict[str, Any]:
        return self.admin.get_site("plant").models[0].model_dump()

    def warnings(self, store: str) -> int:
        return self.log.read_text().count(f"disk full at {store} (")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("diskfull")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub", tls=True).start()
    admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
    state_dir, cache = root / "plant", root / "plant" / "cache"
    mounted: list[Path] = []
    site: SiteProcess | None = None
    try:
        for version in (1, 2, 3):
            admin.push(write_tiny_onnx(root / f"pump{version}.onnx", offset=version), "pump")
        infer = admin.create_token("diskfull", "infer").token
        enrollment = admin.add_site("plant", {}).enrollment_token
        _mount(state_dir, "2m")
        mounted.append(state_dir)
        _mount(cache, "1m")
        mounted.append(cache)
        site = SiteProcess(
            state_dir, hub.url, str(enrollment), extra_env=SITE_ENV, log_level="info"
        ).start(60)
        log = root / "plant.log"
        fleet = Fleet(hub, admin, site, str(infer), log)
        admin.assign("plant", "pump:1")
        wait_for(lambda: _serves(fleet) == 1, "plant serving pump:1", 120)
        yield fleet
    finally:
        if site is not None:
            site.stop()
        hub.stop()
        for directory in reversed(mounted):
            _umount(directory)


def _serves(fleet: Fleet) -> int | None:
    with fleet.http() as client:
        answer = client.get(f"{fleet.site.url}/v2/models/pump/ready")
    return int(answer.json()["version"]) if answer.status_code == 200 else None


def _full_at(fleet: Fleet) -> set[str]:
    return {name for name, store in fleet.storage().items() if store["full"]}


def _serving_and(fleet: Fleet, predicate: Any) -> bool:
    """Serve one request (which must succeed), then check ``predicate``."""
    fleet.infer()
    return bool(predicate())


def test_full_state_dir_keeps_serving_counts_spool_and_state_and_recovers(fleet: Fleet) -> None:
    filler = fill(fleet.state_dir)
    try:
        # Telemetry windows close every 0.2 s: traffic makes the spool write until it fails.
        wait_for(
            lambda: _serving_and(fleet, lambda: fleet.lost("spool") > 0),
            "the spool to count windows it could not keep",
            120,
        )
        assert fleet.full("spool") == 1
        # A new version: its desired state and its last-good record cannot be written.
        fleet.admin.assign("plant", "pump:2")
        wait_for(
            lambda: _serving_and(fleet, lambda: fleet.lost("state") > 0),
            "a state write to fail",
            120,
        )
        wait_for(
            lambda: _serving_and(fleet, lambda: {"spool", "state"} <= _full_at(fleet)),
            "the hub to show the full stores",
            120,
        )
        spool = fleet.storage()["spool"]
        assert spool["message"].startswith("disk full at spool: ")
        assert spool["lost_in_episode"] >= 1
        for _ in range(20):
            assert fleet.infer() in (1, 2)
    finally:
        filler.unlink()

    wait_for(
        lambda: _serving_and(
            fleet,
            lambda: fleet.full("spool") == 0 and fleet.full("state") == 0,
        ),
        "spool and state writes to resume",
        120,
    )
    wait_for(
        lambda: fleet.model()["state"] == "ready" and fleet.model()["active_version"] == 2,
        "pump:2 ready",
        120,
    )
    wait_for(
        lambda: not any(v["full"] for v in fleet.storage().values()),
        "the hub to show space back",
        120,
    )
    assert fleet.infer() == 2
    with sqlite3.connect(f"file:{fleet.state_dir / 'state.db'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (good,) = db.execute("SELECT version FROM good_models WHERE name = 'pump'").fetchone()
        (doc,) = db.execute("SELECT doc FROM desired").fetchone()
    assert good == 2  # the last-good record written once space returned
    # The desired state that arrived while the disk was full was written afterwards.
    assert json.loads(doc)["revision"] == fleet.admin.get_site("plant").revision
    with sqlite3.connect(f"file:{fleet.state_dir / 'telemetry.db'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # One warning per store for the whole episode, however many writes failed.
    assert fleet.warnings("spool") == 1
    assert fleet.warnings("state") == 1


def test_full_model_cache_keeps_serving_then_the_download_completes_whole(fleet: Fleet) -> None:
    cache = fleet.state_dir / "cache"
    before = fleet.infer()
    filler = fill(cache)
    try:
        fleet.admin.assign("plant", "pump:3")
        wait_for(
            lambda: _serving_and(fleet, lambda: fleet.error_code() == "insufficient_storage"),
            "the download to fail for want of space",
            120,
        )
        assert fleet.lost("cache") >= 1
        assert fleet.storage()["cache"]["message"].startswith("disk full at cache: ")
        for _ in range(10):
            assert fleet.infer() == before  # the current version keeps serving
    finally:
        filler.unlink()
    wait_for(lambda: _serving_and(fleet, lambda: _serves(fleet) == 3), "pump:3 after space", 120)
    assert fleet.infer() == 3
    assert fleet.full("cache") == 0
    assert os.listdir(cache / "partial") == []
    for blob in (cache / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert fleet.warnings("cache") == 1
