"""Open Inference Protocol v2 codecs: round-trips for every datatype and every rejection."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from modelfleet.errors import InvalidInput, TensorError
from modelfleet.oip.codec import (
    binary_output_names,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    to_numpy_input,
)
from modelfleet.oip.datatypes import OIP_TO_NUMPY
from modelfleet.oip.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

NUMERIC = [name for name in OIP_TO_NUMPY if name not in ("BYTES", "BOOL")]


def sample(datatype: str) -> np.ndarray[Any, Any]:
    """A 2x3 tensor that exercises each type's extremes."""
    if datatype == "BYTES":
        return np.array(["a", "", "héllo", "x" * 40, "\x00nul", "é"], dtype=object).reshape(2, 3)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        values: list[float] = [info.min, info.max, 0, 1, info.max - 1, info.min + 1]
    else:
        finfo = np.finfo(dtype)  # type: ignore[type-var]
        values = [float(finfo.min), float(finfo.max), 0.0, -0.0, 1.5, float(finfo.tiny)]
    return np.array(values, dtype=dtype).reshape(2, 3)


def body_with_binary(doc: dict[str, Any], *payloads: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(doc)
    return header + b"".join(payloads), len(header)


def bytes_payload(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def request_doc(**tensor: Any) -> dict[str, Any]:
    base = {"name": "x", "datatype": "FP32", "shape": [2]}
    base.update(tensor)
    return {"inputs": [base]}


def raises(body: bytes, header_length: int | None, match: str) -> TensorError:
    with pytest.raises(TensorError, match=match) as info:
        decode_request(body, header_length)
    return info.value


# --------------------------------------------------------------------------- round-trips


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(OIP_TO_NUMPY))
def test_request_roundtrip_every_datatype(datatype: str, binary: bool) -> None:
    data = sample(datatype)
    req = InferRequest(id="r-1", inputs=[InferInput("in", datatype, (2, 3), data)])
    body, header_length = encode_request(req, binary=binary)
    assert (header_length is not None) == binary
    got = decode_request(body, header_length).inputs[0]
    assert (got.name, got.datatype, got.shape) == ("in", datatype, (2, 3))
    assert got.parameters == {}
    assert got.data.shape == (2, 3)
    if datatype == "BYTES":
        expected = [s.encode() for s in data.ravel()] if binary else list(data.ravel())
        assert got.data.dtype == object
        assert list(got.data.ravel()) == expected
    else:
        assert got.data.dtype == OIP_TO_NUMPY[datatype]
        assert got.data.tobytes() == data.tobytes()  # exact, including -0.0


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(OIP_TO_NUMPY))
def test_response_roundtrip_every_datatype(datatype: str, binary: bool) -> None:
    data = sample(datatype)
    resp = InferResponse(
        model_name="m",
        model_version="3",
        id="r-1",
        outputs=[InferOutput("out", datatype, (2, 3), data, {"note": "kept"})],
        parameters={"queue_us": 12},
    )
    body, header_length = encode_response(resp, binary_outputs=binary)
    got = decode_response(body, header_length)
    assert (got.model_name, got.model_version, got.id) == ("m", "3", "r-1")
    assert got.parameters == {"queue_us": 12}
    out = got.outputs[0]
    assert (out.name, out.datatype, out.shape, out.parameters) == (
        "out",
        datatype,
        (2, 3),
        {"note": "kept"},
    )
    if datatype == "BYTES":
        expected = [s.encode() for s in data.ravel()] if binary else list(data.ravel())
        assert list(out.data.ravel()) == expected
    else:
        assert out.data.tobytes() == data.tobytes()


@pytest.mark.parametrize("datatype", NUMERIC)
def test_nested_json_data_decodes_to_shape(datatype: str) -> None:
    data = sample(datatype)
    doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 3], "data": data.tolist()}]}
    got = decode_request(orjson.dumps(doc)).inputs[0].data
    assert got.shape == (2, 3)
    assert got.tobytes() == data.tobytes()


def test_nested_bool_and_bytes_json() -> None:
    doc = {
        "inputs": [
            {"name": "b", "datatype": "BOOL", "shape": [2, 1], "data": [[True], [False]]},
            {"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": [["p", "q"]]},
        ]
    }
    b, s = decode_request(orjson.dumps(doc)).inputs
    assert b.data.tolist() == [[True], [False]]
    assert s.data.tolist() == [["p", "q"]]


def test_ids_parameters_and_requested_outputs_are_preserved() -> None:
    req = InferRequest(
        id="abc",
        inputs=[InferInput("x", "INT64", (3,), np.arange(3), {"content_type": "np"})],
        outputs=[
            RequestedOutput("y", binary_data=True, parameters={"classification": 2}),
            RequestedOutput("z"),
        ],
        parameters={"binary_data_output": False, "priority": 1},
    )
    for binary in (False, True):
        got = decode_request(*encode_request(req, binary=binary))
        assert got.id == "abc"
        assert got.parameters == {"binary_data_output": False, "priority": 1}
        assert got.inputs[0].parameters == {"content_type": "np"}
        assert got.outputs is not None
        assert [(o.name, o.binary_data, o.parameters) for o in got.outputs] == [
            ("y", True, {"classification": 2}),
            ("z", None, {}),
        ]


def test_absent_outputs_and_id_stay_absent() -> None:
    got = decode_request(orjson.dumps(request_doc(data=[1, 2])))
    assert got.id is None
    assert got.outputs is None
    assert got.parameters == {}
    assert got.inputs[0].data.tolist() == [1.0, 2.0]


def test_binary_and_json_inputs_mixed_in_one_request() -> None:
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    c = np.array([7, 8], dtype="<u2")
    doc = {
        "id": "mix",
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": 24},
            },
            {"name": "b", "datatype": "INT8", "shape": [2], "data": [-1, 1]},
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": 15},
            },
            {
                "name": "c",
                "datatype": "UINT16",
                "shape": [2],
                "parameters": {"binary_data_size": 4},
            },
        ],
    }
    body, header_length = body_with_binary(
        doc, a.tobytes(), bytes_payload(b"hi", b"there"), c.tobytes()
    )
    got = {t.name: t for t in decode_request(body, header_length).inputs}
    assert got["a"].data.tobytes() == a.tobytes()
    assert got["b"].data.tolist() == [-1, 1]
    assert got["s"].data.tolist() == [b"hi", b"there"]
    assert got["c"].data.tolist() == [7, 8]
    assert all(t.parameters == {} for t in got.values())


def test_binary_tensor_at_misaligned_offset_is_correct() -> None:
    value = np.array([1.25, -2.5], dtype="<f8")
    doc = {
        "inputs": [
            {"name": "u", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
            {"name": "d", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
        ]
    }
    body, header_length = body_with_binary(doc, b"\x01\x02\x03", value.tobytes())
    u, d = decode_request(body, header_length).inputs
    assert u.data.tolist() == [1, 2, 3]
    assert d.data.tolist() == [1.25, -2.5]
    assert d.data.flags.aligned


def test_binary_outputs_subset_and_header_length() -> None:
    resp = InferResponse(
        model_name="m",
        outputs=[
            InferOutput("j", "FP32", (2,), np.array([1.0, 2.0], dtype=np.float32)),
            InferOutput("b", "INT32", (2,), np.array([3, 4], dtype=np.int32)),
        ],
    )
    body, header_length = encode_response(resp, binary_outputs={"b"})
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["outputs"][0]["data"] == [1.0, 2.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert "data" not in header["outputs"][1]
    assert body[header_length:] == np.array([3, 4], dtype="<i4").tobytes()
    got = decode_response(body, header_length)
    assert [o.data.tolist() for o in got.outputs] == [[1.0, 2.0], [3, 4]]
    assert encode_response(resp)[1] is None


def test_fp16_json_and_null_means_nan() -> None:
    doc = {"inputs": [{"name": "h", "datatype": "FP16", "shape": [3], "data": [0.5, None, 65504]}]}
    data = decode_request(orjson.dumps(doc)).inputs[0].data
    assert data.dtype == np.float16
    assert data[0] == 0.5
    assert np.isnan(data[1])
    assert data[2] == 65504


def test_non_finite_floats_become_null_in_json() -> None:
    values = np.array([np.nan, np.inf, 1.0], dtype=np.float32)
    resp = InferResponse("m", outputs=[InferOutput("y", "FP32", (3,), values)])
    body, _ = encode_response(resp)
    assert orjson.loads(body)["outputs"][0]["data"] == [None, None, 1.0]
    got = decode_response(body, None).outputs[0].data
    assert np.isnan(got[0])
    assert np.isnan(got[1])
    assert got[2] == 1.0


def test_zero_size_and_scalar_tensors() -> None:
    doc = {
        "inputs": [
            {"name": "e", "datatype": "INT32", "shape": [0, 4], "data": []},
            {"name": "s", "datatype": "FP64", "shape": [], "data": [2.5]},
            {"name": "z", "datatype": "BYTES", "shape": [0], "data": []},
        ]
    }
    e, s, z = decode_request(orjson.dumps(doc)).inputs
    assert e.data.shape == (0, 4)
    assert e.data.dtype == np.int32
    assert s.data.shape == ()
    assert float(s.data) == 2.5
    assert z.data.shape == (0,)
    req = InferRequest(id=None, inputs=[e, s, z])
    again = decode_request(*encode_request(req, binary=True)).inputs
    assert [t.data.shape for t in again] == [(0, 4), (), (0,)]


def test_ints_given_for_float_types_are_accepted() -> None:
    doc = request_doc(data=[1, 2])
    assert decode_request(orjson.dumps(doc)).inputs[0].data.tolist() == [1.0, 2.0]


def test_encoder_casts_within_kind_and_reshapes() -> None:
    req = InferRequest(id=None, inputs=[InferInput("x", "FP32", (2, 2), np.arange(4.0))])
    data = decode_request(*encode_request(req, binary=True)).inputs[0].data
    assert data.dtype == np.float32
    assert data.tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_framing_keys_in_parameters_do_not_leak() -> None:
    tensor = InferInput("x", "FP32", (1,), np.ones(1, np.float32), {"binary_data_size": 99})
    body, _ = encode_request(InferRequest(id=None, inputs=[tensor]), binary=False)
    assert decode_request(body).inputs[0].parameters == {}


# --------------------------------------------------------------------------- helpers


def test_binary_output_names_precedence() -> None:
    names = ["a", "b", "c"]

    def req(outputs: list[RequestedOutput] | None, default: bool | None) -> InferRequest:
        params = {} if default is None else {"binary_data_output": default}
        return InferRequest(id=None, inputs=[], outputs=outputs, parameters=params)

    assert binary_output_names(req(None, None), names) == set()
    assert binary_output_names(req(None, True), names) == {"a", "b", "c"}
    assert binary_output_names(req([], True), names) == {"a", "b", "c"}
    outputs = [RequestedOutput("a", True), RequestedOutput("b"), RequestedOutput("c", False)]
    assert binary_output_names(req(outputs, None), names) == {"a"}
    assert binary_output_names(req(outputs, True), names) == {"a", "b"}
    assert binary_output_names(req([RequestedOutput("zz", True)], None), names) == set()


def test_to_numpy_input_infers_datatype() -> None:
    assert to_numpy_input(np.zeros((2, 2), np.float32), "x").datatype == "FP32"
    assert to_numpy_input([1.0, 2.0], "x").datatype == "FP64"
    assert to_numpy_input([[1, 2]], "x").shape == (1, 2)
    big_endian = to_numpy_input(np.arange(3, dtype=">i4"), "x")
    assert (big_endian.datatype, big_endian.data.dtype.str) == ("INT32", "<i4")
    strings = to_numpy_input(["a", "b"], "s")
    assert strings.datatype == "BYTES"
    assert strings.data.dtype == object
    assert strings.data.tolist() == ["a", "b"]
    with pytest.raises(TensorError, match="input 'c'"):
        to_numpy_input(np.zeros(2, np.complex64), "c")
    with pytest.raises(TensorError, match="input 'r'"):
        to_numpy_input([[1, 2], [3]], "r")


def test_tensor_error_is_invalid_input() -> None:
    err = TensorError("boom")
    assert isinstance(err, InvalidInput)
    assert (err.code, err.status) == ("invalid_tensor", 400)


# --------------------------------------------------------------------------- rejections

JSON_ERRORS: list[tuple[str, Any, str]] = [
    ("not-object", [], "JSON must be an object"),
    ("inputs-missing", {}, "'inputs' must be an array"),
    ("input-not-object", {"inputs": [3]}, "input #0: must be a JSON object"),
    ("name-missing", {"inputs": [{"datatype": "FP32"}]}, "input #0: 'name'"),
    ("name-empty", {"inputs": [{"name": ""}]}, "input #0: 'name'"),
    ("datatype-missing", {"inputs": [{"name": "x"}]}, "input 'x': missing 'datatype'"),
    ("datatype-unknown", request_doc(datatype="FP8"), "input 'x': unknown datatype 'FP8'"),
    ("datatype-lower", request_doc(datatype="fp32"), "input 'x': unknown datatype"),
    ("shape-missing", {"inputs": [{"name": "x", "datatype": "FP32"}]}, "input 'x': missing"),
    ("shape-not-list", request_doc(shape=2, data=[1, 2]), "input 'x': 'shape' must be"),
    ("shape-float", request_doc(shape=[2.0], data=[1, 2]), "input 'x': shape dimensions"),
    ("shape-bool", request_doc(shape=[True], data=[1]), "input 'x': shape dimensions"),
    ("shape-negative", request_doc(shape=[-2], data=[1, 2]), "input 'x': .*negative"),
    ("shape-too-deep", request_doc(shape=[1] * 33, data=[1]), "input 'x': shape has 33"),
    ("count", request_doc(shape=[2, 2], data=[1, 2, 3]), "input 'x': 'data' has 3 elements"),
    ("count-nested", request_doc(shape=[3], data=[[1], [2]]), "input 'x': 'data' has 2"),
    (
        "nested-wrong-shape",
        request_doc(shape=[3, 2], data=[[1, 2, 3], [4, 5, 6]]),
        r"input 'x': nested 'data' has shape \[2, 3\]",
    ),
    ("ragged", request_doc(shape=[3], data=[[1, 2], [3]]), "input 'x': .*evenly nested"),
    ("data-scalar", request_doc(shape=[], data=5), "input 'x': 'data' must be a JSON array"),
    ("data-null", request_doc(data=None), "input 'x': 'data' must be a JSON array"),
    ("strings-for-fp32", request_doc(data=["1", "2"]), "input 'x': FP32 .* got strings"),
    ("mixed-for-fp32", request_doc(data=[1, "2"]), "input 'x': FP32 data must be numbers"),
    ("object-for-fp32", request_doc(data=[{}, 1]), "input 'x': FP32 data must be numbers"),
    ("bools-for-fp32", request_doc(data=[True, False]), "input 'x': .*got booleans"),
    ("bools-for-int", request_doc(datatype="INT8", data=[True, False]), "input 'x': .*booleans"),
    ("null-for-int", request_doc(datatype="INT32", data=[1, None]), "input 'x': INT32 .*integers"),
    ("float-for-int", request_doc(datatype="INT32", data=[1.5, 2]), "input 'x': INT32 .*integers"),
    ("numbers-for-bool", request_doc(datatype="BOOL", data=[0, 1]), "input 'x': BOOL data"),
    ("mixed-for-bool", request_doc(datatype="BOOL", data=[True, 1]), "input 'x': BOOL data"),
    ("uint8-300", request_doc(datatype="UINT8", data=[1, 300]), "input 'x': value 300 .* UINT8"),
    ("uint16-neg", request_doc(datatype="UINT16", data=[-1, 0]), "input 'x': value -1 .*UINT16"),
    ("int32-big", request_doc(datatype="INT32", data=[2**31, 0]), "input 'x': value 2147483648"),
    ("int8-low", request_doc(datatype="INT8", data=[-129, 0]), "input 'x': value -129"),
    ("int64-big", request_doc(datatype="INT64", data=[2**63, 0]), "input 'x': value 92233"),
    ("uint64-mixed-neg", request_doc(datatype="UINT64", data=[2**63, -1]), "input 'x': value -1"),
    ("int-mixed-bool", request_doc(datatype="INT16", data=[True, 1.5]), "input 'x': .*booleans"),
    (
        "fp32-overflow",
        request_doc(data=[1e39, 0]),
        "input 'x': value 1e\\+39 is out of range for FP32",
    ),
    ("fp16-overflow", request_doc(datatype="FP16", data=[70000, 0]), "input 'x': value 70000"),
    ("bytes-numbers", request_doc(datatype="BYTES", data=["a", 1]), "input 'x': BYTES data must"),
    ("bytes-ragged", request_doc(datatype="BYTES", data=[["a"], "b"]), "input 'x': BYTES data"),
    ("neither", request_doc(), "input 'x': has neither"),
    (
        "both",
        request_doc(data=[1, 2], parameters={"binary_data_size": 8}),
        "input 'x': has both",
    ),
    ("binary-without-header", request_doc(parameters={"binary_data_size": 8}), "input 'x': .*no"),
    ("tensor-params", request_doc(data=[1, 2], parameters=[1]), "input 'x': 'parameters' must"),
    (
        "duplicate",
        {"inputs": [request_doc(data=[1, 2])["inputs"][0]] * 2},
        "input 'x': duplicate",
    ),
    ("request-params", {**request_doc(data=[1, 2]), "parameters": 1}, "request: 'parameters'"),
    ("id-number", {**request_doc(data=[1, 2]), "id": 7}, "request: 'id' must be a string"),
    (
        "binary-data-output",
        {**request_doc(data=[1, 2]), "parameters": {"binary_data_output": "yes"}},
        "binary_data_output must be true or false",
    ),
    ("outputs-object", {**request_doc(data=[1, 2]), "outputs": {}}, "'outputs' must be an array"),
    ("output-not-object", {**request_doc(data=[1, 2]), "outputs": [1]}, "requested output #0"),
    ("output-no-name", {**request_doc(data=[1, 2]), "outputs": [{}]}, "requested output #0"),
    (
        "output-binary-data",
        {**request_doc(data=[1, 2]), "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
        "requested output 'y': parameters.binary_data",
    ),
    (
        "output-duplicate",
        {**request_doc(data=[1, 2]), "outputs": [{"name": "y"}, {"name": "y"}]},
        "requested output 'y': duplicate",
    ),
]


@pytest.mark.parametrize(
    ("doc", "match"), [c[1:] for c in JSON_ERRORS], ids=[c[0] for c in JSON_ERRORS]
)
def test_json_request_rejections(doc: Any, match: str) -> None:
    raises(orjson.dumps(doc), None, match)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "malformed JSON"),
        (b"{", "malformed JSON"),
        (b'{"inputs": [}', "malformed JSON"),
        (b'{"id": "\xff"}', "malformed JSON"),
        (b"[" * 5000 + b"]" * 5000, "malformed JSON"),
        (b'{"inputs": [], "x": NaN}', "malformed JSON"),
        (b'"string"', "must be an object, got str"),
    ],
)
def test_malformed_bodies(body: bytes, match: str) -> None:
    raises(body, None, match)


def test_integers_beyond_64_bits_are_rejected() -> None:
    for literal in (b"18446744073709551616", b"-9223372036854775809"):
        body = b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[2],"data":[1,%s]}]}' % literal
        raises(body, None, "input 'x': UINT64 data must be integers, got .*beyond 64 bits")


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("id", "request: 'id' must be a string, got \\[...\\]"),
        ("data", "input 'x': 'data' must be a JSON array, got {...}"),
        ("shape", "input 'x': shape dimensions must be integers, got \\[...\\]"),
        ("name", "input #0: 'name' must be"),
        ("datatype", "input 'x': unknown datatype \\[...\\]"),
        ("parameters", "input 'x': 'parameters' must be an object, got \\[...\\]"),
    ],
)
def test_deeply_nested_values_anywhere_give_tensor_error(where: str, match: str) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    tensor: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    marker = "__DEEP__"
    doc: dict[str, Any] = {"inputs": [tensor]}
    if where == "id":
        doc["id"] = marker
    else:
        tensor[where] = {"k": marker} if where == "data" else marker
    body = orjson.dumps(doc).replace(b'"__DEEP__"', deep)
    raises(body, None, match)


def test_deep_nesting_in_data_is_rejected() -> None:
    nested: Any = [1.0]
    for _ in range(100):
        nested = [nested]
    raises(orjson.dumps(request_doc(shape=[1], data=nested)), None, "input 'x'")


def binary_doc(datatype: str, shape: list[int], size: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "t",
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": size},
            }
        ]
    }


@pytest.mark.parametrize(
    ("doc", "payload", "match"),
    [
        (binary_doc("FP32", [2], 4), b"\0" * 4, "input 't': binary_data_size is 4 .* needs 8"),
        (binary_doc("FP32", [2], 8), b"\0" * 9, "9 bytes beyond|1 bytes beyond"),
        (binary_doc("FP32", [2], 8), b"\0" * 7, "input 't': binary_data_size 8 runs past"),
        (binary_doc("FP32", [2], -8), b"", "input 't': binary_data_size must be a non-negative"),
        (binary_doc("FP32", [2], True), b"", "input 't': binary_data_size must be"),
        (binary_doc("FP32", [2], "8"), b"\0" * 8, "input 't': binary_data_size must be"),
        (binary_doc("BOOL", [2], 2), b"\x01\x02", "input 't': BOOL bytes must be 0 or 1"),
        (binary_doc("BYTES", [2], 4), b"\0" * 4, "input 't': binary_data_size 4 is too small"),
        (
            binary_doc("BYTES", [1], 7),
            struct.pack("<I", 9) + b"abc",
            "input 't': BYTES element 0 claims 9 bytes",
        ),
        (
            binary_doc("BYTES", [1], 8),
            bytes_payload(b"ab") + b"zz",
            "input 't': binary_data_size is 8 but its 1 BYTES elements use 6",
        ),
        (
            binary_doc("BYTES", [2], 9),
            bytes_payload(b"abcde"),
            "input 't': BYTES element 1 has no room",
        ),
        (
            binary_doc("BYTES", [2], 2**40),
            b"",
            "input 't': binary_data_size 1099511627776 runs past",
        ),
        (
            binary_doc("UINT8", [2**40, 2**40], 4),
            b"\0" * 4,
            "input 't': binary_data_size is 4 but shape",
        ),
    ],
)
def test_binary_request_rejections(doc: dict[str, Any], payload: bytes, match: str) -> None:
    body, header_length = body_with_binary(doc, payload)
    raises(body, header_length, match)


def test_binary_section_longer_than_declared() -> None:
    body, header_length = body_with_binary(binary_doc("FP32", [2], 8), b"\0" * 10)
    raises(body, header_length, "binary section has 2 bytes beyond")


def test_binary_section_without_binary_inputs() -> None:
    body, header_length = body_with_binary(request_doc(data=[1, 2]), b"junk")
    raises(body, header_length, "binary section has 4 bytes beyond")


@pytest.mark.parametrize(
    ("header_length", "match"),
    [
        (-1, "is negative"),
        (10_000, "exceeds the body"),
        (True, "must be an integer"),
        ("12", "must be an integer"),
        (3, "malformed JSON"),
        (0, "malformed JSON"),
    ],
)
def test_bad_header_lengths(header_length: Any, match: str) -> None:
    body, _ = body_with_binary(request_doc(data=[1, 2]))
    raises(body, header_length, match)


def test_body_must_be_bytes() -> None:
    with pytest.raises(TensorError, match="body must be bytes"):
        decode_request("{}")  # type: ignore[arg-type]
    body = orjson.dumps(request_doc(data=[1, 2]))
    assert decode_request(bytearray(body)).inputs[0].name == "x"  # type: ignore[arg-type]


def test_response_rejections() -> None:
    with pytest.raises(TensorError, match="response is an error: 'model not ready'"):
        decode_response(b'{"error": "model not ready"}', None)
    with pytest.raises(TensorError, match="'model_name' must be a string"):
        decode_response(b'{"outputs": []}', None)
    with pytest.raises(TensorError, match="output 'y': BOOL data"):
        decode_response(
            orjson.dumps(
                {
                    "model_name": "m",
                    "outputs": [{"name": "y", "datatype": "BOOL", "shape": [1], "data": [1]}],
                }
            ),
            None,
        )


@pytest.mark.parametrize(
    ("tensor", "binary", "match"),
    [
        (InferOutput("y", "FP8", (1,), np.zeros(1)), False, "output 'y': unknown datatype"),
        (InferOutput("y", "FP32", (3,), np.zeros(2)), False, "output 'y': data of dtype"),
        (InferOutput("y", "INT32", (2,), np.zeros(2)), True, "output 'y': data of dtype float64"),
        (InferOutput("y", "BYTES", (1,), np.zeros(1)), False, "output 'y': BYTES data must hold"),
        (
            InferOutput("y", "BYTES", (1,), np.array([b"\xff"], dtype=object)),
            False,
            "output 'y': BYTES element 0 is not UTF-8",
        ),
        (
            InferOutput("y", "BYTES", (1,), np.array([3], dtype=object)),
            True,
            "output 'y': BYTES elements must be str or bytes, got int",
        ),
        (
            InferOutput("y", "BYTES", (1,), np.array(["\ud800"], dtype=object)),
            True,
            "output 'y': BYTES element 0 is not valid Unicode",
        ),
        (InferOutput("y", "FP32", (-1,), np.zeros(1)), False, "output 'y': shape"),
    ],
)
def test_encode_rejections(tensor: InferOutput, binary: bool, match: str) -> None:
    with pytest.raises(TensorError, match=match):
        encode_response(InferResponse("m", outputs=[tensor]), binary_outputs=binary)


def test_encode_rejects_unserialisable_parameters_and_duplicates() -> None:
    resp = InferResponse("m", parameters={"x": object()})
    with pytest.raises(TensorError, match="cannot be serialised"):
        encode_response(resp)
    x = InferInput("x", "FP32", (1,), np.zeros(1, np.float32))
    with pytest.raises(TensorError, match="input 'x': duplicate"):
        encode_request(InferRequest(id=None, inputs=[x, x]), binary=False)


def test_binary_bytes_output_keeps_non_utf8() -> None:
    data = np.array([b"\xff\x00", b""], dtype=object)
    resp = InferResponse("m", outputs=[InferOutput("y", "BYTES", (2,), data)])
    got = decode_response(*encode_response(resp, binary_outputs=True)).outputs[0].data
    assert got.tolist() == [b"\xff\x00", b""]
