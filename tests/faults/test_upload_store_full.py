"""The hub's artifact store on a full disk (a real 2 MiB tmpfs): 507 insufficient_storage,
nothing left behind, and the same push succeeds once space is freed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfleet.errors import ArtifactTooLarge, InsufficientStorage, NotFound
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess

MIB = 1 << 20


def _model(path: Path, floats: int) -> Path:
    """Y = X + W with a ``floats``-element initializer: an ONNX file of about 4*floats bytes."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", floats])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", floats])
    weight = numpy_helper.from_array(np.arange(floats, dtype=np.float32), name="W")
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    graph = helper.make_graph([node], "big", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def full_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str, Path]]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI and the dev machines run as root)")
    root = tmp_path_factory.mktemp("store-full")
    store = root / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)], check=True)
    try:
        token = init_hub(root / "hub", artifacts=str(store)).admin_token
        env = {"MODELFLEET_HUB_MAX_ARTIFACT_BYTES": str(3 * MIB // 2)}
        proc = HubProcess(root / "hub", extra_env=env).start()
        try:
            yield proc, token, store
        finally:
            proc.kill()
    finally:
        subprocess.run(["umount", str(store)], check=True)


def _files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file())


def test_full_store_is_507_leaves_nothing_and_the_push_succeeds_once_freed(
    full_hub: tuple[HubProcess, str, Path], tmp_path: Path
) -> None:
    proc, token, store = full_hub
    filler = store / "filler"
    filler.write_bytes(b"\0" * (5 * MIB // 4))  # leaves ~0.75 MiB free
    model = _model(tmp_path / "big.onnx", MIB // 4)  # ~1 MiB: fits the limit, not the disk
    assert os.statvfs(store).f_bavail * os.statvfs(store).f_frsize < model.stat().st_size

    cli = subprocess.run(
        [sys.executable, "-m", "modelfleet", "model", "push", str(model), "-n", "big",
         "--hub", proc.url, "--token", token],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MODELFLEET_CA_FILE": str(proc.ca_file)},
    )  # fmt: skip
    assert cli.returncode != 0
    lines = [line for line in cli.stderr.splitlines() + cli.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, cli.stderr + cli.stdout
    assert "Traceback" not in lines[0]
    assert str(store) in lines[0]
    assert "is full" in lines[0]
    assert "free space" in lines[0]

    with HubClient(proc.url, token, ca_file=proc.ca_file) as hc:
        with pytest.raises(InsufficientStorage) as refused:
            hc.push(model, "big")
        assert refused.value.status == 507
        assert refused.value.code == "insufficient_storage"
        assert _files(store) == [filler], "a partial blob or temporary was left in the store"
        assert list((proc.data_dir / "tmp").glob("upload-*")) == []
        with pytest.raises(NotFound):
            hc.get_model("big")

        filler.unlink()  # the operator frees space
        version = hc.push(model, "big")
        assert version.version == 1
        assert [v.version for v in hc.get_model("big").versions] == [1]

        too_big = _model(tmp_path / "huge.onnx", MIB // 2)  # ~2 MiB: over the hub's limit
        with pytest.raises(ArtifactTooLarge) as over:
            hc.push(too_big, "huge")
        assert over.value.status == 413
