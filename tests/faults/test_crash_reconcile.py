"""Crash windows of the site agent's reconcile of a new model version (issue #20).

One real hub (plain HTTP behind a :class:`RecordingProxy`, so the test reads the requests the
hub received, Range headers included) and one real site, shared by the module. Each test
pushes a new version of ``m``, restarts the site armed at one point, deploys the version,
checks that the site died there (SIGKILL), restarts it unarmed and checks the invariant,
with an inference call proving what it serves.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.faults.crash import armed, wait_killed
from tests.recording_proxy import RecordingProxy
from tests.waiting import wait_for

#: Enough bytes for several 1 MiB download chunks (transport/session.py _CHUNK).
BIG_BYTES = 4 << 20
CHUNK = 1 << 20


def write_big_onnx(path: Path, offset: float) -> Path:
    """Y = X + offset on [batch, 4], plus an unused ~4 MiB initializer (random, so no
    transfer encoding can shrink it) that makes the blob span several download chunks."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    const = helper.make_tensor("offset", TensorProto.FLOAT, [1], [offset])
    ballast = np.random.default_rng(int(offset)).random(BIG_BYTES // 4, dtype=np.float32)
    pad = numpy_helper.from_array(ballast, "ballast")
    node = helper.make_node("Add", ["X", "offset"], ["Y"])
    graph = helper.make_graph([node], "big", [x], [y], initializer=[const, pad])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass
class Fleet:
    root: Path
    hub: HubProcess
    proxy: RecordingProxy
    admin: HubClient
    site: SiteProcess
    infer_token: str
    pushed: int = 0

    @property
    def cache(self) -> Path:
        return self.site.state_dir / "cache"

    def push(self, offset: float) -> tuple[int, str]:
        """A new version of ``m`` whose output is X + ``offset``; (version, hex digest)."""
        self.pushed += 1
        path = write_big_onnx(self.root / f"m{self.pushed}.onnx", offset)
        version = self.admin.push(path, "m", training_regions=["global"])
        return int(version["version"]), str(version["digest"]).removeprefix("sha256:")

    def deploy(self, version: int) -> None:
        self.admin.deploy({"ref": f"m:{version}", "selector": "", "strategy": {"bake_s": 0}})

    def restart_armed(self, point: str, marker: Path, after: int = 0) -> None:
        self.site.stop()
        self.site.extra_env = armed(point, marker, after=after)
        self.site.start(timeout=60)

    def restart_unarmed(self) -> None:
        self.site.extra_env = {}
        self.site.start(timeout=60)

    def served(self) -> tuple[int, float]:
        """(model_version, offset) of one inference call: what the site really serves."""
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
        response = httpx.post(
            f"{self.site.url}/v2/models/m/infer",
            json=body,
            headers={"Authorization": f"Bearer {self.infer_token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        doc = response.json()
        data = doc["outputs"][0]["data"]
        assert len(set(data)) == 1, data
        return int(doc["model_version"]), float(data[0])

    def serves(self, version: int, offset: float) -> bool:
        try:
            return self.served() == (version, offset)
        except (AssertionError, httpx.TransportError):
            return False

    def blob_gets(self, digest: str) -> list[bytes]:
        return self.proxy.requests_with(f"GET /api/v1/blobs/{digest}".encode())

    def last_good(self) -> dict[str, tuple[int, str]]:
        """state.db's last good versions (read-only; the site may be running)."""
        uri = f"file:{self.site.state_dir / 'state.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            rows = db.execute("SELECT name, version, digest FROM good_models").fetchall()
        return {name: (int(version), str(digest)) for name, version, digest in rows}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("reconcile")
    init = init_hub(root / "hub")
    hub = HubProcess(
        root / "hub", tls=False, extra_env={"MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3"}
    ).start()
    proxy = RecordingProxy(hub.port)
    admin = HubClient(hub.url, init.admin_token)
    token = admin.add_site("plant", {"region": "eu-west"})["enrollment_token"]
    site = SiteProcess(root / "site", proxy.url, token)
    made = Fleet(root, hub, proxy, admin, site, admin.create_token("t", "infer").token)
    try:
        site.start(timeout=60)
        version, _ = made.push(1.0)
        made.deploy(version)
        wait_for(lambda: made.serves(version, 1.0), "the site to serve m:1", 60)
        yield made
    finally:
        site.stop()
        admin.close()
        proxy.close()
        hub.stop()


def test_mid_download_resumes_with_range_from_the_bytes_on_disk(fleet: Fleet) -> None:
    point, marker = "site.reconcile.mid_download", fleet.root / "mid_download.marker"
    old, old_offset = fleet.served()
    offset = float(fleet.pushed + 1)
    version, digest = fleet.push(offset)
    fleet.restart_armed(point, marker, after=1)  # dies after the second chunk is written
    fleet.deploy(version)
    wait_killed(fleet.site.proc, point, marker)
    partial = fleet.cache / "partial" / digest
    held = partial.stat().st_size
    assert 0 < held < BIG_BYTES, held
    assert held % CHUNK == 0, held  # whole chunks: what a kill after a write leaves
    assert [b"Range" not in head for head in fleet.blob_gets(digest)] == [True]

    fleet.restart_unarmed()
    # Ready means restored from the cache: the old version, or the new one if the resumed
    # download already finished; never nothing.
    assert fleet.served() in {(old, old_offset), (version, offset)}
    wait_for(lambda: fleet.serves(version, offset), f"the site to serve m:{version}", 60)
    gets = fleet.blob_gets(digest)
    assert len(gets) == 2, gets
    ranges = re.findall(rb"\r\n[Rr]ange: ([^\r\n]*)", gets[1])
    assert ranges == [f"bytes={held}-".encode()], gets[1]
    assert not partial.exists()  # committed: the whole digest verified after the resume
    assert fleet.last_good()["m"] == (version, digest)
    assert (fleet.cache / "blobs" / "sha256" / digest).is_file()


def test_after_verify_swaps_the_cached_blob_in_without_fetching_it_again(fleet: Fleet) -> None:
    point, marker = "site.reconcile.after_verify", fleet.root / "after_verify.marker"
    old, old_offset = fleet.served()
    offset = float(fleet.pushed + 1)
    version, digest = fleet.push(offset)
    fleet.restart_armed(point, marker)
    fleet.deploy(version)
    wait_killed(fleet.site.proc, point, marker)
    assert (fleet.cache / "blobs" / "sha256" / digest).is_file()
    assert fleet.last_good()["m"][0] == old

    fleet.restart_unarmed()
    assert fleet.served() in {(old, old_offset), (version, offset)}
    wait_for(lambda: fleet.serves(version, offset), f"the site to serve m:{version}", 60)
    assert len(fleet.blob_gets(digest)) == 1  # the one download before the crash
    assert fleet.last_good()["m"] == (version, digest)


def test_mid_swap_serves_old_or_new_then_converges_and_state_agrees(fleet: Fleet) -> None:
    point, marker = "site.reconcile.mid_swap", fleet.root / "mid_swap.marker"
    old, old_offset = fleet.served()
    old_digest = fleet.last_good()["m"][1]
    offset = float(fleet.pushed + 1)
    version, digest = fleet.push(offset)
    fleet.restart_armed(point, marker)
    fleet.deploy(version)
    wait_killed(fleet.site.proc, point, marker)
    # Killed with the new version loaded in memory only: state.db still names the old one.
    assert fleet.last_good()["m"] == (old, old_digest)

    fleet.restart_unarmed()
    # Ready means restored: it serves one whole version, the old or the new, never neither.
    assert fleet.served() in {(old, old_offset), (version, offset)}
    wait_for(lambda: fleet.serves(version, offset), f"the site to serve m:{version}", 60)
    wait_for(lambda: fleet.last_good()["m"] == (version, digest), "state.db to name the new", 30)
    blobs = fleet.cache / "blobs" / "sha256"
    assert (blobs / digest).is_file()
    assert len(fleet.blob_gets(digest)) == 1  # swapped from the cache, not downloaded again
    assert not (fleet.cache / "partial" / digest).exists()
