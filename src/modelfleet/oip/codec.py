"""Open Inference Protocol v2 messages <-> HTTP bodies, for both server and client sides.

A body is either pure JSON, or (binary tensor extension) a JSON header followed by raw tensor
payloads concatenated in tensor order; the header's byte length travels in the
``Inference-Header-Content-Length`` HTTP header, which is why the decoders take it and the
encoders return it. The HTTP layer stays outside: these functions see only bytes and ints.

Decoding validates everything a hostile or buggy client can send and raises only
:class:`~modelfleet.errors.TensorError`, naming the tensor at fault, so the server answers 400
without a catch-all. Encoding coerces tensor data to the declared datatype and reports
unencodable values (e.g. non-UTF-8 ``BYTES`` asked for as JSON) the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modelfleet.errors import TensorError
from modelfleet.oip.codec_binary import data_from_binary, data_to_binary
from modelfleet.oip.codec_json import NUMPY_ERRORS, brief, data_from_json, data_to_json
from modelfleet.oip.datatypes import OIP_TO_NUMPY, numpy_to_oip
from modelfleet.oip.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "binary_output_names",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "to_numpy_input",
]

#: Most dimensions a shape may have; well above any ONNX model and within numpy's own limit.
MAX_DIMS = 32
_MAX_DIM = 2**63 - 1  # shapes are int64 on the wire (Triton, ONNX)
_DATATYPES = ", ".join(OIP_TO_NUMPY)
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

_TensorFields = tuple[str, str, tuple[int, ...], npt.NDArray[Any], dict[str, Any]]


# --------------------------------------------------------------------------- decoding


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an inference request; ``header_length`` set means the binary extension is in use."""
    body = _as_bytes(body)
    header, cursor = _split(body, header_length)
    doc = _load_object(header, "request")
    request_id = _optional_str(doc, "id", "request")
    parameters = _parameters(doc.get("parameters"), "request")
    default = parameters.get("binary_data_output")
    if default is not None and not isinstance(default, bool):
        raise TensorError("request: parameters.binary_data_output must be true or false")
    items = doc.get("inputs")
    if not isinstance(items, list):
        raise TensorError("request: 'inputs' must be an array of tensors")
    inputs: list[InferInput] = []
    binary = header_length is not None
    for index, item in enumerate(items):
        fields, cursor = _decode_tensor(item, index, "input", body, cursor, binary)
        inputs.append(InferInput(*fields))
    _check_unique([t.name for t in inputs], "input")
    _check_consumed(body, cursor)
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs")),
        parameters=parameters,
    )


def decode_response(body: bytes, header_length: int | None) -> InferResponse:
    """Decode an inference response (client side: SDK and gateway)."""
    body = _as_bytes(body)
    header, cursor = _split(body, header_length)
    doc = _load_object(header, "response")
    if "error" in doc and "outputs" not in doc:
        raise TensorError(f"response is an error: {brief(doc['error'], 200)}")
    model_name = doc.get("model_name")
    if not isinstance(model_name, str):
        raise TensorError("response: 'model_name' must be a string")
    items = doc.get("outputs")
    if not isinstance(items, list):
        raise TensorError("response: 'outputs' must be an array of tensors")
    outputs: list[InferOutput] = []
    binary = header_length is not None
    for index, item in enumerate(items):
        fields, cursor = _decode_tensor(item, index, "output", body, cursor, binary)
        outputs.append(InferOutput(*fields))
    _check_unique([t.name for t in outputs], "output")
    _check_consumed(body, cursor)
    return InferResponse(
        model_name=model_name,
        model_version=_optional_str(doc, "model_version", "response"),
        id=_optional_str(doc, "id", "response"),
        outputs=outputs,
        parameters=_parameters(doc.get("parameters"), "response"),
    )


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TensorError(f"body must be bytes, got {type(body).__name__}")


def _split(body: bytes, header_length: int | None) -> tuple[memoryview, int]:
    """The JSON header and the offset where binary payloads start."""
    if header_length is None:
        return memoryview(body), len(body)
    if not isinstance(header_length, int) or isinstance(header_length, bool):
        raise TensorError("Inference-Header-Content-Length must be an integer")
    if header_length < 0:
        raise TensorError(f"Inference-Header-Content-Length {header_length} is negative")
    if header_length > len(body):
        raise TensorError(
            f"Inference-Header-Content-Length {header_length} exceeds the body's {len(body)} bytes"
        )
    return memoryview(body)[:header_length], header_length


def _load_object(header: memoryview, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise TensorError(f"{what}: malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TensorError(f"{what}: JSON must be an object, got {type(doc).__name__}")
    return doc


def _optional_str(doc: dict[str, Any], key: str, what: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise TensorError(f"{what}: '{key}' must be a string, got {brief(value)}")
    return value


def _parameters(value: Any, where: str) -> dict[str, Any]:
    """A private copy, so popping framing keys never mutates a caller's document."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where}: 'parameters' must be an object, got {brief(value)}")
    return dict(value)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TensorError(f"{where}: 'shape' must be an array of integers, got {brief(value)}")
    if len(value) > MAX_DIMS:
        raise TensorError(f"{where}: shape has {len(value)} dimensions; at most {MAX_DIMS}")
    for dim in value:
        if type(dim) is not int:
            raise TensorError(f"{where}: shape dimensions must be integers, got {brief(dim)}")
        if dim < 0:
            raise TensorError(f"{where}: shape {brief(value, 80)} has negative dimension {dim}")
        if dim > _MAX_DIM:
            raise TensorError(f"{where}: shape dimension {dim} is too large")
    return tuple(value)


def _decode_tensor(
    item: Any, index: int, role: str, body: bytes, cursor: int, binary: bool
) -> tuple[_TensorFields, int]:
    """One tensor's fields and the cursor past its binary payload, if it has one."""
    if not isinstance(item, dict):
        raise TensorError(f"{role} #{index}: must be a JSON object, got {brief(item)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError(f"{role} #{index}: 'name' must be a non-empty string")
    where = f"{role} {brief(name, 80)}"
    datatype = item.get("datatype")
    if datatype is None:
        raise TensorError(f"{where}: missing 'datatype'")
    if not isinstance(datatype, str) or datatype not in OIP_TO_NUMPY:
        raise TensorError(f"{where}: unknown datatype {brief(datatype)}; use one of {_DATATYPES}")
    if "shape" not in item:
        raise TensorError(f"{where}: missing 'shape'")
    shape = _shape(item["shape"], where)
    parameters = _parameters(item.get("parameters"), where)
    size = parameters.pop("binary_data_size", None)
    if size is None:
        if "data" not in item:
            raise TensorError(f"{where}: has neither 'data' nor parameters.binary_data_size")
        data = data_from_json(item["data"], datatype, shape, where)
        return (name, datatype, shape, data, parameters), cursor
    if "data" in item:
        raise TensorError(f"{where}: has both 'data' and parameters.binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TensorError(f"{where}: binary_data_size must be a non-negative integer")
    if not binary:
        raise TensorError(
            f"{where}: has binary_data_size but the body has no binary section "
            f"(Inference-Header-Content-Length is missing)"
        )
    if cursor + size > len(body):
        raise TensorError(
            f"{where}: binary_data_size {size} runs past the end of the body "
            f"({len(body) - cursor} bytes remain)"
        )
    data = data_from_binary(body, cursor, size, datatype, shape, where)
    return (name, datatype, shape, data, parameters), cursor + size


def _check_unique(names: list[str], role: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise TensorError(f"{role} {brief(name, 80)}: duplicate {role} name")
            seen.add(name)


def _check_consumed(body: bytes, cursor: int) -> None:
    if cursor != len(body):
        raise TensorError(
            f"binary section has {len(body) - cursor} bytes beyond the declared "
            f"binary_data_size values"
        )


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TensorError("request: 'outputs' must be an array")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise TensorError(f"requested output #{index}: must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise TensorError(f"requested output #{index}: 'name' must be a non-empty string")
        where = f"requested output {brief(name, 80)}"
        parameters = _parameters(item.get("parameters"), where)
        binary_data = parameters.pop("binary_data", None)
        if binary_data is not None and not isinstance(binary_data, bool):
            raise TensorError(f"{where}: parameters.binary_data must be true or false")
        outputs.append(RequestedOutput(name, binary_data, parameters))
    _check_unique([o.name for o in outputs], "requested output")
    return outputs


# --------------------------------------------------------------------------- encoding


def encode_response(
    resp: InferResponse, *, binary_outputs: AbstractSet[str] | bool = False
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    doc: dict[str, Any] = {"model_name": resp.model_name}
    if resp.model_version is not None:
        doc["model_version"] = resp.model_version
    if resp.id is not None:
        doc["id"] = resp.id
    if resp.parameters:
        doc["parameters"] = resp.parameters
    entries: list[dict[str, Any]] = []
    payloads: list[bytes | memoryview] = []
    for out in resp.outputs:
        binary = binary_outputs if isinstance(binary_outputs, bool) else out.name in binary_outputs
        entries.append(_encode_tensor(out, "output", binary, payloads))
    doc["outputs"] = entries
    return _finish(doc, payloads, "response")


def encode_request(req: InferRequest, *, binary: bool) -> tuple[bytes, int | None]:
    """The request body and, with ``binary``, the JSON header's length (every input binary)."""
    _check_unique([t.name for t in req.inputs], "input")
    doc: dict[str, Any] = {}
    if req.id is not None:
        doc["id"] = req.id
    if req.parameters:
        doc["parameters"] = req.parameters
    payloads: list[bytes | memoryview] = []
    doc["inputs"] = [_encode_tensor(t, "input", binary, payloads) for t in req.inputs]
    if req.outputs is not None:
        doc["outputs"] = [_requested_output_doc(o) for o in req.outputs]
    return _finish(doc, payloads, "request")


def binary_output_names(req: InferRequest, all_output_names: Iterable[str]) -> set[str]:
    """Which outputs to send binary: per-output ``binary_data`` overrides the request default.

    The default is the request parameter ``binary_data_output``. With requested outputs only
    those are considered (an empty list counts as "all outputs"); names the model does not have
    are left out, since rejecting them is the server's business, not the codec's.
    """
    default = req.parameters.get("binary_data_output") is True
    names = set(all_output_names)
    if not req.outputs:
        return names if default else set()
    return {
        o.name
        for o in req.outputs
        if o.name in names and (default if o.binary_data is None else o.binary_data)
    }


def to_numpy_input(value: npt.NDArray[Any] | list[Any], name: str) -> InferInput:
    """An input whose datatype follows the array's dtype (Python floats become FP64).

    Strings (numpy ``U``/``S`` arrays or lists of str) become a ``BYTES`` object array.
    """
    where = f"input {brief(name, 80)}"
    try:
        arr = np.asarray(value)
        datatype = numpy_to_oip(arr.dtype)
        if datatype == "BYTES":
            arr = arr.astype(object, copy=False)
        else:
            arr = arr.astype(OIP_TO_NUMPY[datatype], copy=False)
    except NUMPY_ERRORS as exc:
        raise TensorError(f"{where}: {exc}") from None
    return InferInput(name, datatype, tuple(arr.shape), arr)


def _requested_output_doc(out: RequestedOutput) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": out.name}
    parameters = dict(out.parameters)
    if out.binary_data is not None:
        parameters["binary_data"] = out.binary_data
    if parameters:
        doc["parameters"] = parameters
    return doc


def _encode_tensor(
    tensor: InferInput | InferOutput,
    role: str,
    binary: bool,
    payloads: list[bytes | memoryview],
) -> dict[str, Any]:
    """The tensor's JSON entry; a binary payload is appended to ``payloads`` in order."""
    where = f"{role} {brief(tensor.name, 80)}"
    datatype = tensor.datatype
    shape = _encode_shape(tensor.shape, where)
    arr = _conform(tensor.data, datatype, shape, where)
    entry: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": list(shape)}
    parameters = tensor.parameters
    if "binary_data_size" in parameters:
        parameters = {k: v for k, v in parameters.items() if k != "binary_data_size"}
    if binary:
        payload = data_to_binary(arr, datatype, where)
        payloads.append(payload)
        entry["parameters"] = {**parameters, "binary_data_size": len(payload)}
    else:
        if parameters:
            entry["parameters"] = parameters
        entry["data"] = data_to_json(arr, datatype, where)
    return entry


def _encode_shape(shape: Any, where: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except NUMPY_ERRORS:
        raise TensorError(f"{where}: shape must be a sequence of integers") from None
    if any(d < 0 for d in dims):
        raise TensorError(f"{where}: shape {list(dims)} has a negative dimension")
    return dims


def _conform(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> npt.NDArray[Any]:
    """``data`` as the declared datatype and shape; widening casts only within a kind."""
    target = OIP_TO_NUMPY.get(datatype)
    if target is None:
        raise TensorError(f"{where}: unknown datatype {brief(datatype)}; use one of {_DATATYPES}")
    try:
        arr = np.asarray(data)
        if datatype == "BYTES":
            if arr.dtype.kind not in "OUS":
                raise TensorError(f"{where}: BYTES data must hold str or bytes, not {arr.dtype}")
        elif arr.dtype != target:
            arr = arr.astype(target, casting="same_kind")
        if arr.shape != shape:
            arr = arr.reshape(shape)
    except NUMPY_ERRORS as exc:
        raise TensorError(
            f"{where}: data of dtype {getattr(data, 'dtype', type(data).__name__)} and shape "
            f"{list(getattr(data, 'shape', ()))} does not fit {datatype} {list(shape)}: {exc}"
        ) from None
    return arr


def _finish(
    doc: dict[str, Any], payloads: list[bytes | memoryview], what: str
) -> tuple[bytes, int | None]:
    try:
        header = orjson.dumps(doc, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TensorError(f"{what} cannot be serialised as JSON: {exc}") from None
    if not payloads:
        return header, None
    return b"".join([header, *payloads]), len(header)
