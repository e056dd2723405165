"""A hub SIGKILLed mid-push: no version without its blob, no orphan blob, one version after
the retry (crash points ``hub.upload.after_blob`` and ``hub.upload.after_row``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfleet.errors import HubUnreachable
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from tests.conftest import write_tiny_onnx
from tests.faults.crash import armed, wait_killed

#: Grace 0: this hub is alone on its store, so every leftover is collected at start.
HUB_ENV = {"MODELFLEET_HUB_UPLOAD_GRACE_S": "0"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    root = tmp_path_factory.mktemp("crash-upload")
    token = init_hub(root / "hub").admin_token
    proc = HubProcess(root / "hub", extra_env=dict(HUB_ENV))
    yield proc, token
    proc.kill()


def _client(proc: HubProcess, token: str) -> HubClient:
    return HubClient(proc.url, token, ca_file=proc.ca_file, timeout=30)


def _blobs(proc: HubProcess) -> set[str]:
    root = proc.data_dir / "artifacts" / "blobs" / "sha256"
    return {p.name for p in root.glob("*/*")}


def _leftovers(proc: HubProcess) -> list[Path]:
    tmp = [*(proc.data_dir / "artifacts" / "tmp").iterdir()]
    return [*tmp, *(proc.data_dir / "tmp").glob("upload-*")]


def _check_store(proc: HubProcess, token: str, name: str, tmp: Path) -> list[int]:
    """Every listed version downloads and matches its digest; no blob is unreferenced."""
    with _client(proc, token) as hc:
        versions = hc.get_model(name).versions
        for v in versions:
            dest = tmp / f"{name}-{v.version}.onnx"
            hc.pull(f"{name}:{v.version}", dest)
            assert hashlib.sha256(dest.read_bytes()).hexdigest() == v.digest
        models = [hc.get_model(m.name) for m in hc.list_models()]
    referenced = {v.digest for m in models for v in m.versions}
    assert _blobs(proc) == referenced, "an orphan blob (or a missing one) after restart"
    assert _leftovers(proc) == []
    return [v.version for v in versions]


@pytest.mark.parametrize("point", ["hub.upload.after_blob", "hub.upload.after_row"])
def test_push_killed_mid_upload_leaves_one_version_after_retry(
    hub: tuple[HubProcess, str], tmp_path: Path, point: str
) -> None:
    proc, token = hub
    name = point.rsplit(".", 1)[1].replace("_", "-")
    model = write_tiny_onnx(tmp_path / "m.onnx", offset=3.5 if "blob" in name else 7.5)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    marker = tmp_path / "marker"
    proc.stop()  # the previous case's hub, if any
    proc.extra_env = {**HUB_ENV, **armed(point, marker)}
    proc.start()
    with _client(proc, token) as hc, pytest.raises(HubUnreachable):
        hc.push(model, name, alias="production", tags={"run": "1"})
    wait_killed(proc.proc, point, marker)
    assert digest in _blobs(proc)  # the kill came after the blob was published

    proc.extra_env = dict(HUB_ENV)
    proc.start()  # unarmed: the start-up sweep runs before it serves
    if point == "hub.upload.after_blob":
        assert digest not in _blobs(proc), "the blob without a version row was not collected"
        with _client(proc, token) as hc:
            assert name not in {m.name for m in hc.list_models()}
    else:
        assert _check_store(proc, token, name, tmp_path) == [1]

    with _client(proc, token) as hc:  # the operator pushes again
        version = hc.push(model, name, alias="production", tags={"run": "1"})
        assert version.version == 1
        assert version.digest == digest
        assert hc.resolve(f"{name}@production").version == 1
        events = hc.request("GET", "/api/v1/events", params={"limit": 1000}).json()
        registered = [
            e for e in events if e["type"] == "model.registered" and e["subject"] == f"{name}:1"
        ]
        assert len(registered) == 1, registered
    assert _check_store(proc, token, name, tmp_path) == [1]
