"""Fixtures for the registry tests: an S3-compatible server on loopback, stores, tiny models."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from modelfleet.registry.artifacts import ArtifactStore, open_artifact_store

BUCKET = "modelfleet-test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, with one bucket, for the whole session."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **_s3_credentials(endpoint))
    fs.mkdir(BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def _s3_credentials(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "eu-west-1"},
    }


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    return _s3_credentials(s3_endpoint)


@pytest.fixture(params=["local", "s3", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Every implementation, each on a fresh root, so one contract suite covers them all."""
    if request.param == "local":
        return open_artifact_store(str(tmp_path / "artifacts"))
    if request.param == "memory":
        return open_artifact_store(f"memory://modelfleet-{uuid.uuid4().hex}")
    options = request.getfixturevalue("s3_options")
    return open_artifact_store(f"s3://{BUCKET}/{uuid.uuid4().hex}", storage_options=options)


@pytest.fixture
def make_blob(tmp_path: Path) -> Callable[[bytes], tuple[Path, str]]:
    """Write bytes to a file and return it with its sha256."""

    def make(data: bytes) -> tuple[Path, str]:
        path = tmp_path / f"blob-{uuid.uuid4().hex}"
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()

    return make


def relu_model(*, producer: str = "pytorch", version: str = "2.3.0") -> onnx.ModelProto:
    """A one-node model with a symbolic batch dimension."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="relu")], "g", [x], [y])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name=producer,
        producer_version=version,
    )
    model.ir_version = 8
    return model


@pytest.fixture
def relu_path(tmp_path: Path) -> Path:
    path = tmp_path / "relu.onnx"
    onnx.save(relu_model(), path)
    return path
