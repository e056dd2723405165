"""Open Inference Protocol v2 conformance of the site server, over real HTTP on loopback.

Identity models, one per datatype, are built with ``onnx.helper``; every endpoint is called
the way Triton's and KServe's clients call it, in JSON and in the binary tensor extension.
The server runs the production stack (InferenceServer on the builtin listener) in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelfleet.oip.codec import decode_response, encode_request
from modelfleet.oip.datatypes import OIP_TO_NUMPY
from modelfleet.oip.types import InferInput, InferRequest, RequestedOutput
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel
from modelfleet.site.server import InferenceServer
from modelfleet.transport.server import start_builtin

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
DATATYPES = list(ONNX_TYPES)


def identity_model(path: Path, datatype: str, width: int = 3) -> Path:
    """x [batch, width] -> y = x and z = x (two outputs, for requested-output subsets)."""
    elem = ONNX_TYPES[datatype]
    x = helper.make_tensor_value_info("x", elem, ["batch", width])
    y = helper.make_tensor_value_info("y", elem, ["batch", width])
    z = helper.make_tensor_value_info("z", elem, ["batch", width])
    nodes = [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])]
    graph = helper.make_graph(nodes, f"identity_{datatype}", [x], [y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def add_model(path: Path, offset: float, width: int = 4) -> Path:
    """Y = X + offset, FP32 [batch, width]."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", width])
    const = helper.make_tensor("c", TensorProto.FLOAT, [1], [offset])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "c"], ["Y"])], "add", [x], [y], initializer=[const]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def load(path: Path, name: str, version: int, **params: Any) -> LoadedModel:
    model = LoadedModel.load(path, name=name, version=version, digest="sha256:0", params=params)
    model.warm_up()
    return model


def sample(datatype: str, rows: int = 2, width: int = 3) -> np.ndarray[Any, Any]:
    count = rows * width
    if datatype == "BYTES":
        return np.array([f"s{i}é" for i in range(count)], dtype=object).reshape(rows, width)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(rows, width)
    dtype = OIP_TO_NUMPY[datatype]
    values = np.arange(count) * (3 if dtype.kind == "f" else 1)
    if dtype.kind == "f":
        values = values / 2.0
    return values.astype(dtype).reshape(rows, width)


@dataclass
class Recorder:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


class LiveSite:
    """An InferenceServer on the builtin listener, in a thread with its own event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Port 0: the listener binds a free port itself; read back what it got.
        future = asyncio.run_coroutine_threadsafe(
            start_builtin(server.app(), "127.0.0.1", 0), self.loop
        )
        self._listener = future.result(60)
        self.port: int = self._listener.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def close(self) -> None:
        self.client.close()
        self.loop.call_soon_threadsafe(self._listener.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.server.close()


def build_repository(root: Path) -> ModelRepository:
    repository = ModelRepository()
    for datatype in DATATYPES:
        name = f"id_{datatype.lower()}"
        repository.activate(load(identity_model(root / f"{name}.onnx", datatype), name, 1))
    repository.activate(load(add_model(root / "add1.onnx", 1.0), "add", 1))
    repository.activate(
        load(add_model(root / "add2.onnx", 2.0), "add", 2, max_batch_size=16, max_batch_time_ms=2)
    )
    return repository


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[LiveSite]:
    repository = build_repository(tmp_path_factory.mktemp("oip"))
    live = LiveSite(InferenceServer(repository, observer=recorder))
    try:
        yield live
    finally:
        live.close()


def infer_json(
    site: LiveSite, model: str, body: dict[str, Any], version: int | None = None
) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return site.client.post(path, json=body)


def json_input(name: str, datatype: str, arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(arr.shape),
        "data": arr.ravel().tolist(),
    }


# --------------------------------------------------------------------------- health, metadata


def test_health_and_server_metadata(site: LiveSite) -> None:
    assert site.client.get("/v2/health/live").json() == {"live": True}
    assert site.client.get("/v2/health/ready").status_code == 200
    meta = site.client.get("/v2").json()
    assert meta["name"] == "modelfleet-site"
    assert set(meta["extensions"]) == {"binary_tensor_data", "model_repository"}


def test_not_ready_answers_503() -> None:
    server = InferenceServer(ModelRepository(), ready=lambda: False)
    live = LiveSite(server)
    try:
        assert live.client.get("/v2/health/ready").status_code == 503
        assert live.client.get("/v2/health/live").status_code == 200
        answer = live.client.post("/v2/models/add/infer", json={"inputs": []})
        assert answer.status_code == 503
        assert "error" in answer.json()
        assert live.client.get("/v2/models/add/ready").status_code == 503
    finally:
        live.close()


@pytest.mark.parametrize("path", ["/v2/models/add", "/v2/models/add/versions/1"])
def test_model_metadata(site: LiveSite, path: str) -> None:
    meta = site.client.get(path).json()
    assert meta["name"] == "add"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [-1, 4]}]


def test_model_ready_and_unknowns(site: LiveSite) -> None:
    assert site.client.get("/v2/models/add/ready").json() == {
        "name": "add",
        "version": "2",
        "ready": True,
    }
    assert site.client.get("/v2/models/add/versions/1/ready").json()["version"] == "1"
    for path in ("/v2/models/nope/ready", "/v2/models/add/versions/7/ready"):
        answer = site.client.get(path)
        assert answer.status_code == 404
        assert answer.json()["ready"] is False
    for path in ("/v2/models/nope", "/v2/models/add/versions/x", "/v2/nothing-here"):
        answer = site.client.get(path)
        assert answer.status_code == 404
        assert "error" in answer.json()
    assert site.client.get("/v2/models/add/infer").status_code == 405
    assert site.client.post("/v2/health/live").status_code == 405


def test_repository_index(site: LiveSite) -> None:
    entries = site.client.post("/v2/repository/index", json={"ready": True}).json()
    assert {"name": "add", "version": "1", "state": "READY", "reason": ""} in entries
    assert {(e["name"], e["version"]) for e in entries} >= {("add", "2"), ("id_fp32", "1")}
    assert site.client.post("/v2/repository/index").status_code == 200
    assert site.client.post("/v2/repository/index", content=b"[").status_code == 400


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("datatype", DATATYPES)
def test_infer_json_every_datatype(site: LiveSite, datatype: str) -> None:
    arr = sample(datatype)
    body = {
        "id": f"req-{datatype}",
        "parameters": {"tenant": "a", "n": 3},
        "inputs": [json_input("x", datatype, arr)],
    }
    answer = infer_json(site, f"id_{datatype.lower()}", body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == f"req-{datatype}"
    assert doc["model_name"] == f"id_{datatype.lower()}"
    assert doc["model_version"] == "1"
    assert doc["parameters"] == {"tenant": "a", "n": 3}
    assert [o["name"] for o in doc["outputs"]] == ["y", "z"]
    for output in doc["outputs"]:
        assert output["datatype"] == datatype
        assert output["shape"] == [2, 3]
        assert output["data"] == arr.ravel().tolist()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_infer_binary_every_datatype(site: LiveSite, datatype: str) -> None:
    arr = sample(datatype)
    request = InferRequest(
        id="bin-1",
        inputs=[InferInput("x", datatype, arr.shape, arr)],
        outputs=[RequestedOutput("y", binary_data=True), RequestedOutput("z", binary_data=False)],
    )
    body, header_length = encode_request(request, binary=True)
    answer = site.client.post(
        f"/v2/models/id_{datatype.lower()}/infer",
        content=body,
        headers={
            "Inference-Header-Content-Length": str(header_length),
            "Content-Type": "application/octet-stream",
        },
    )
    assert answer.status_code == 200, answer.text
    length = answer.headers.get("inference-header-content-length")
    assert length is not None
    response = decode_response(answer.content, int(length))
    assert response.id == "bin-1"
    assert response.model_version == "1"
    by_name = {o.name: o for o in response.outputs}
    assert set(by_name) == {"y", "z"}
    for output in by_name.values():
        assert output.datatype == datatype
        got = output.data
        if datatype == "BYTES":
            got = np.array(
                [v.decode() if isinstance(v, bytes) else v for v in got.ravel()], dtype=object
            ).reshape(got.shape)
        np.testing.assert_array_equal(got, arr)


def test_binary_data_output_default_and_nested_data(site: LiveSite) -> None:
    body = {
        "parameters": {"binary_data_output": True},
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}
        ],
    }
    answer = infer_json(site, "add", body, version=1)
    assert answer.status_code == 200, answer.text
    response = decode_response(
        answer.content, int(answer.headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(response.outputs[0].data, np.arange(2, 10).reshape(2, 4))


def test_requested_output_subset(site: LiveSite) -> None:
    arr = sample("INT32")
    body = {"inputs": [json_input("x", "INT32", arr)], "outputs": [{"name": "z"}]}
    doc = infer_json(site, "id_int32", body).json()
    assert [o["name"] for o in doc["outputs"]] == ["z"]
    assert "id" not in doc


def test_both_versions_answer_and_unversioned_is_active(site: LiveSite) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    body = {"inputs": [json_input("X", "FP32", x)]}
    for version, expected in ((1, 1.0), (2, 2.0), (None, 2.0)):
        doc = infer_json(site, "add", body, version=version).json()
        assert doc["outputs"][0]["data"] == [expected] * 4
        assert doc["model_version"] == str(version or 2)
    assert infer_json(site, "add", body, version=9).status_code == 404
    assert infer_json(site, "nope", body).status_code == 404


def x_body(**changes: Any) -> dict[str, Any]:
    """A valid request for ``add`` with the input tensor's fields changed."""
    tensor = {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **changes}
    return {"inputs": [tensor]}


BAD_BODIES: list[tuple[str, Any]] = [
    ("malformed json", b"{nope"),
    ("not an object", b"[1, 2]"),
    ("wrong input name", x_body(name="Q")),
    ("wrong datatype", x_body(datatype="INT32")),
    ("wrong shape", x_body(shape=[1, 3], data=[1, 2, 3])),
    ("wrong rank", x_body(shape=[4])),
    ("data length", x_body(data=[1, 2, 3])),
    ("non-numeric", x_body(data=["a", 2, 3, 4])),
    ("missing input", {"inputs": []}),
    ("unknown output", {**x_body(), "outputs": [{"name": "nope"}]}),
    ("unknown datatype", x_body(datatype="FP128")),
]


@pytest.mark.parametrize(("what", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_requests_are_400(site: LiveSite, what: str, body: Any) -> None:
    if isinstance(body, bytes):
        answer = site.client.post("/v2/models/add/infer", content=body)
    else:
        answer = infer_json(site, "add", body)
    assert answer.status_code == 400, (what, answer.text)
    assert isinstance(answer.json()["error"], str)


BINARY_HEADER = (
    b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],'
    b'"parameters":{"binary_data_size":%d}}]}'
)


@pytest.mark.parametrize(
    ("header", "binary"),
    [("abc", b""), ("-1", b""), ("9999", b""), ("10", b"\x00" * 4)],
)
def test_bad_binary_framing_is_400(site: LiveSite, header: str, binary: bytes) -> None:
    doc = BINARY_HEADER % 16
    answer = site.client.post(
        "/v2/models/add/infer",
        content=doc + binary,
        headers={"Inference-Header-Content-Length": header},
    )
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json()


def test_wrong_binary_size_is_400(site: LiveSite) -> None:
    doc = BINARY_HEADER % 12
    answer = site.client.post(
        "/v2/models/add/infer",
        content=doc + b"\x00" * 12,
        headers={"Inference-Header-Content-Length": str(len(doc))},
    )
    assert answer.status_code == 400


def test_oversized_body_is_413() -> None:
    repository = ModelRepository()
    live = LiveSite(InferenceServer(repository, max_body_bytes=100))
    try:
        answer = live.client.post("/v2/models/add/infer", content=b"x" * 1000)
        assert answer.status_code in (404, 413)  # no model: either check may answer first
    finally:
        live.close()


def test_observer_sees_each_request(site: LiveSite, recorder: Recorder) -> None:
    recorder.calls.clear()
    x = np.ones((3, 4), dtype=np.float32)
    assert infer_json(site, "add", {"inputs": [json_input("X", "FP32", x)]}).status_code == 200
    assert infer_json(site, "add", {"inputs": []}).status_code == 400
    ok, bad = recorder.calls
    assert (ok["model"], ok["version"], ok["outcome"]) == ("add", 2, "ok")
    assert ok["batch_size"] == 3
    assert ok["inputs"]["X"].shape == (3, 4)
    assert ok["outputs"]["Y"].shape == (3, 4)
    assert (bad["outcome"], bad["outputs"]) == ("bad_request", None)
    assert "modelfleet_site_inference_requests_total" in site.client.get("/metrics").text


# --------------------------------------------------------------------------- the listener


def raw_exchange(site: LiveSite, payload: bytes, expect: int) -> bytes:
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect or not data.endswith((b"}", b"]")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_pipelined_requests_answer_in_order(site: LiveSite) -> None:
    body = b'{"id":"p%d","inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[0,0,0,%d]}]}'
    payload = b""
    for i in range(3):
        one = body % (i, i)
        payload += (
            b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(one), one)
        )
    data = raw_exchange(site, payload, 3)
    assert data.index(b'"p0"') < data.index(b'"p1"') < data.index(b'"p2"')


def test_expect_continue_and_malformed_http(site: LiveSite) -> None:
    one = b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[0,0,0,0]}]}'
    head = (
        b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(one)
    )
    data = raw_exchange(site, head + one, 2)
    assert data.startswith(b"HTTP/1.1 100 Continue")
    assert b"HTTP/1.1 200 OK" in data
    assert raw_exchange(site, b"GARBAGE\r\n\r\n", 1).startswith(b"HTTP/1.1 400")
    assert site.client.get("/v2/health/live").status_code == 200
