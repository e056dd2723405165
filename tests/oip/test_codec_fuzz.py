"""Property tests: hostile bodies raise only TensorError; valid tensors round-trip exactly."""

from __future__ import annotations

import contextlib
import math
import struct
import warnings
from typing import Any, Literal

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelfleet.errors import TensorError
from modelfleet.oip.codec import decode_request, decode_response, encode_request, encode_response
from modelfleet.oip.datatypes import OIP_TO_NUMPY
from modelfleet.oip.types import InferInput, InferOutput, InferRequest, InferResponse

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUNDTRIP = settings(max_examples=300, deadline=None)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson can write
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 11)) == 11  # 0 is what hypothesis favours


def elements_for(datatype: str) -> st.SearchStrategy[Any]:
    """Values of the right family (including out-of-range ones) for a JSON ``data`` list."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=4)
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind == "f":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1)
    info = np.iinfo(dtype)  # type: ignore[type-var]
    low, high = max(int(info.min) - 2, -(2**63)), min(int(info.max) + 2, 2**64 - 1)
    return st.integers(low, high) | st.sampled_from([low, high, int(info.min), int(info.max)])


def nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def plausible_tensor(draw: st.DrawFn, index: int) -> tuple[dict[str, Any], bytes]:
    """A tensor that is usually valid, with rare mutations, so the deep checks get exercised."""
    datatype = draw(st.sampled_from(list(OIP_TO_NUMPY)))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    count = math.prod(shape)
    tensor: dict[str, Any] = {"name": f"t{index}", "datatype": datatype, "shape": shape}
    payload = b""
    if draw(st.booleans()):
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
            payload = b"".join(struct.pack("<I", len(i)) + i for i in items)
        else:
            nbytes = count * OIP_TO_NUMPY[datatype].itemsize
            payload = draw(st.binary(min_size=nbytes, max_size=nbytes))
        if rarely(draw):
            payload = draw(st.binary(max_size=12))
        size = len(payload) + (draw(st.integers(-3, 3)) if rarely(draw) else 0)
        tensor["parameters"] = {"binary_data_size": size}
    else:
        family = json_scalars if rarely(draw) else elements_for(datatype)
        length = count + (draw(st.integers(-1, 1)) if rarely(draw) else 0)
        flat = draw(st.lists(family, min_size=max(length, 0), max_size=max(length, 0)))
        tensor["data"] = nest(flat, shape) if draw(st.booleans()) else flat
    if rarely(draw):
        key = draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]))
        if draw(st.booleans()):
            tensor.pop(key, None)
        else:
            tensor[key] = draw(json_values)
    if rarely(draw):
        tensor["shape"] = draw(st.lists(st.integers(-2, 3) | json_scalars, max_size=4))
    return tensor, payload


@st.composite
def hostile_body(draw: st.DrawFn) -> tuple[bytes, int | None]:
    pairs = [draw(plausible_tensor(i)) for i in range(draw(st.integers(0, 3)))]
    doc: dict[str, Any] = {
        "inputs": [t for t, _ in pairs],
        "id": draw(st.none() | st.text(max_size=3)),
    }
    if draw(st.booleans()):
        outputs = [{"name": "y", "parameters": {"binary_data": draw(st.booleans())}}]
        doc["outputs"] = draw(json_values) if rarely(draw) else outputs
    if rarely(draw):
        doc[draw(st.sampled_from(["id", "parameters", "inputs"]))] = draw(json_values)
    header = orjson.dumps(doc)
    payload = b"".join(p for _, p in pairs)
    if rarely(draw):
        payload += draw(st.binary(min_size=1, max_size=8))
    header_length: int | None = len(header) if payload or draw(st.booleans()) else None
    if rarely(draw):
        header_length = draw(st.none() | st.integers(-2, len(header) + len(payload) + 2))
    return header + payload, header_length


def decode_or_tensor_error(body: bytes, header_length: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning must not leak either
        with contextlib.suppress(TensorError):
            decode_request(body, header_length)
        with contextlib.suppress(TensorError):
            decode_response(body, header_length)


@FUZZ
@given(st.binary(max_size=200), st.none() | st.integers(min_value=-10, max_value=300))
def test_arbitrary_bytes_raise_only_tensor_error(body: bytes, header_length: int | None) -> None:
    decode_or_tensor_error(body, header_length)


@FUZZ
@given(json_values, st.none() | st.integers(min_value=-5, max_value=500))
def test_arbitrary_json_raises_only_tensor_error(value: Any, header_length: int | None) -> None:
    decode_or_tensor_error(orjson.dumps(value), header_length)


@settings(FUZZ, max_examples=800)
@given(hostile_body())
def test_request_shaped_garbage_raises_only_tensor_error(case: tuple[bytes, int | None]) -> None:
    decode_or_tensor_error(*case)


# --------------------------------------------------------------------------- round-trips

shapes_small = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensor(draw: st.DrawFn, *, json: bool) -> tuple[str, np.ndarray[Any, Any]]:
    datatype = draw(st.sampled_from(list(OIP_TO_NUMPY)))
    shape = draw(shapes_small)
    if datatype == "BYTES":
        items = st.text(max_size=6) if json or draw(st.booleans()) else st.binary(max_size=6)
        return datatype, draw(hnp.arrays(object, shape, elements=items))
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind == "f":
        # JSON has no Infinity (it travels as null and comes back as NaN); NaN does survive.
        width: Literal[16, 32, 64] = {2: 16, 4: 32, 8: 64}[dtype.itemsize]  # type: ignore[assignment]
        elements = st.floats(width=width, allow_infinity=not json)
        return datatype, draw(hnp.arrays(dtype, shape, elements=elements))
    return datatype, draw(hnp.arrays(dtype, shape))


def assert_same(
    datatype: str, sent: np.ndarray[Any, Any], got: np.ndarray[Any, Any], json: bool
) -> None:
    assert got.shape == sent.shape
    if datatype == "BYTES":
        expected = [x if json or isinstance(x, bytes) else x.encode() for x in sent.ravel()]
        assert got.ravel().tolist() == expected
        return
    assert got.dtype == OIP_TO_NUMPY[datatype]
    if json and got.dtype.kind == "f":
        assert np.array_equal(got, sent, equal_nan=True)
        assert np.array_equal(np.signbit(got), np.signbit(sent)) or np.isnan(sent).any()
    else:
        assert got.tobytes() == sent.tobytes()  # bit-exact, NaN payloads included


@ROUNDTRIP
@given(st.lists(tensor(json=True), min_size=1, max_size=3), st.booleans())
def test_json_tensors_roundtrip(tensors: list[tuple[str, Any]], as_request: bool) -> None:
    _roundtrip(tensors, as_request, binary=False)


@ROUNDTRIP
@given(st.lists(tensor(json=False), min_size=1, max_size=3), st.booleans())
def test_binary_tensors_roundtrip(tensors: list[tuple[str, Any]], as_request: bool) -> None:
    _roundtrip(tensors, as_request, binary=True)


def _roundtrip(tensors: list[tuple[str, Any]], as_request: bool, *, binary: bool) -> None:
    names = [f"t{i}" for i in range(len(tensors))]
    got: list[InferInput | InferOutput]
    if as_request:
        inputs = [
            InferInput(n, dt, arr.shape, arr) for n, (dt, arr) in zip(names, tensors, strict=True)
        ]
        body, header_length = encode_request(InferRequest(id="i", inputs=inputs), binary=binary)
        got = list(decode_request(body, header_length).inputs)
    else:
        outputs = [
            InferOutput(n, dt, arr.shape, arr) for n, (dt, arr) in zip(names, tensors, strict=True)
        ]
        body, header_length = encode_response(
            InferResponse("m", outputs=outputs), binary_outputs=binary
        )
        got = list(decode_response(body, header_length).outputs)
    assert [t.name for t in got] == names
    for (datatype, sent), tensor_got in zip(tensors, got, strict=True):
        assert tensor_got.datatype == datatype
        assert tensor_got.shape == sent.shape
        assert_same(datatype, sent, tensor_got.data, json=not binary)
