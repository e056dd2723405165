"""The binary envelope that carries weights and updates between hub and sites.

``MFT1`` | u32 little-endian header length | JSON header | raw little-endian arrays.
The header holds free metadata (example count, metrics, ...) and each array's name, dtype
and shape. Nothing is unpickled and only float32/float64 arrays are accepted, so a
hostile body can at worst be refused; sizes are checked before any array is built.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.errors import InvalidInput
from modelfleet.federation.strategies.base import State, Vector

MAGIC = b"MFT1"
MEDIA_TYPE = "application/vnd.modelfleet.tensors"
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_MAX_HEADER = 1 << 20
#: More dimensions than any model tensor has; bounds what a crafted header can ask for.
_MAX_DIMS = 32


def pack(meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[np.generic]]) -> bytes:
    """Serialise ``meta`` (JSON-able) and named float arrays into one body."""
    specs = []
    chunks = []
    for name, array in arrays.items():
        arr = np.asarray(array)
        dtype = "float64" if arr.dtype == np.float64 else "float32"
        # Not ascontiguousarray: it makes a 0-d array 1-d, so a scalar came back as [x].
        data = np.asarray(arr, dtype=_DTYPES[dtype], order="C")
        specs.append({"name": name, "dtype": dtype, "shape": list(data.shape)})
        chunks.append(data.tobytes())
    header = json.dumps({"meta": dict(meta), "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *chunks])


def unpack(body: bytes) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.generic]]]:
    """Inverse of :func:`pack`; ``InvalidInput`` on anything malformed."""
    if len(body) < 8 or body[:4] != MAGIC:
        raise InvalidInput(f"not a modelfleet tensor envelope (expected {MEDIA_TYPE})")
    (length,) = struct.unpack("<I", body[4:8])
    if length > _MAX_HEADER or 8 + length > len(body):
        raise InvalidInput("tensor envelope header is truncated or too large")
    try:
        header = json.loads(body[8 : 8 + length])
        meta = header["meta"]
        specs = header["arrays"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: a header nested deeper than the JSON decoder goes ([[[[...]]]]).
        raise InvalidInput(f"tensor envelope header is not valid: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(specs, list):
        raise InvalidInput("tensor envelope header must hold a meta object and an arrays list")
    offset = 8 + length
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for spec in specs:
        try:
            name = str(spec["name"])
            dtype = _DTYPES[spec["dtype"]]
            raw_shape = spec["shape"]
            if not isinstance(raw_shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in raw_shape
            ):
                raise TypeError("shape must be a list of integers")
            shape = tuple(raw_shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"bad array description in tensor envelope: {repr(spec)[:200]}"
            ) from exc
        if name in arrays:  # which one would count? the sender meant something else
            raise InvalidInput(f"array {name!r} appears twice in the tensor envelope")
        if len(shape) > _MAX_DIMS or any(s < 0 for s in shape):
            raise InvalidInput(
                f"array {name!r} has a negative dimension or more than {_MAX_DIMS} dimensions"
            )
        # Python integers: a crafted shape such as [2**62, 4] cannot overflow here (numpy's
        # int64 product would), and the size is checked against the bytes that arrived.
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(body):
            raise InvalidInput(f"tensor envelope is truncated inside array {name!r}")
        # An empty array's other dimensions are bounded too: [0, 2**70] holds no bytes,
        # but numpy refuses (ValueError) any shape whose non-zero dimensions overflow.
        if math.prod(max(s, 1) for s in shape) * dtype.itemsize > len(body):
            raise InvalidInput(f"array {name!r} has dimensions larger than the envelope")
        arrays[name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += nbytes
    if offset != len(body):
        raise InvalidInput("tensor envelope has trailing bytes")
    return meta, arrays


# --- the coordinator's stored arrays -------------------------------------------------


def pack_vector(vector: Vector) -> bytes:
    return pack({}, {"weights": vector})


def unpack_vector(data: bytes) -> Vector:
    _, arrays = unpack(data)
    return np.asarray(arrays["weights"], np.float32)


def pack_state(state: State) -> bytes:
    return pack({}, dict(state))


def unpack_state(data: bytes | None) -> State:
    if data is None:
        return {}
    _, arrays = unpack(data)
    return {k: np.asarray(v, np.float64) for k, v in arrays.items()}
