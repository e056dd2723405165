"""Tensor payloads in the binary tensor extension <-> numpy arrays.

Numeric tensors are raw little-endian row-major bytes; decoding wraps the request body with
``np.frombuffer`` instead of copying, so a decoded tensor is a read-only view that keeps the body
alive (copied only when the offset leaves it misaligned for its dtype). ``BYTES`` tensors are a
sequence of elements, each a 4-byte little-endian length followed by that many raw bytes; they
decode to an object array of ``bytes``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.errors import TensorError
from modelfleet.oip.codec_json import NUMPY_ERRORS
from modelfleet.oip.datatypes import OIP_TO_NUMPY

__all__ = ["data_from_binary", "data_to_binary"]

_LENGTH = struct.Struct("<I")


def data_from_binary(
    body: bytes, offset: int, size: int, datatype: str, shape: tuple[int, ...], where: str
) -> npt.NDArray[Any]:
    """Decode the ``size`` bytes at ``offset`` of ``body``; the caller has checked the bounds."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _unpack_bytes(body, offset, size, count, where)
        arr = np.empty(count, dtype=object)
        arr[:] = items
    else:
        dtype = OIP_TO_NUMPY[datatype]
        expected = count * dtype.itemsize
        if size != expected:
            raise TensorError(
                f"{where}: binary_data_size is {size} but shape {list(shape)} of {datatype} "
                f"needs {expected} bytes"
            )
        if count == 0:
            arr = np.empty(0, dtype=dtype)
        else:
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            if not arr.flags.aligned:
                arr = arr.copy()
            if datatype == "BOOL" and arr.view(np.uint8).max() > 1:
                raise TensorError(f"{where}: BOOL bytes must be 0 or 1")
    try:
        return arr.reshape(shape)
    except NUMPY_ERRORS as exc:
        raise TensorError(f"{where}: cannot shape data as {list(shape)}: {exc}") from None


def _unpack_bytes(body: bytes, offset: int, size: int, count: int, where: str) -> list[bytes]:
    if count * _LENGTH.size > size:
        raise TensorError(
            f"{where}: binary_data_size {size} is too small for {count} BYTES elements "
            f"(each needs a 4-byte length)"
        )
    end = offset + size
    pos = offset
    unpack = _LENGTH.unpack_from
    items: list[bytes] = []
    append = items.append
    for index in range(count):
        if pos + 4 > end:
            raise TensorError(f"{where}: BYTES element {index} has no room for its length")
        (length,) = unpack(body, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise TensorError(
                f"{where}: BYTES element {index} claims {length} bytes but only "
                f"{end - pos} remain in binary_data_size"
            )
        append(body[pos:stop])
        pos = stop
    if pos != end:
        raise TensorError(
            f"{where}: binary_data_size is {size} but its {count} BYTES elements "
            f"use {pos - offset} bytes"
        )
    return items


def data_to_binary(arr: npt.NDArray[Any], datatype: str, where: str) -> bytes | memoryview:
    """The payload bytes; numeric tensors are exposed as a buffer so the final join copies once."""
    if datatype == "BYTES":
        return _pack_bytes(arr.reshape(-1).tolist(), where)
    flat = np.ascontiguousarray(arr.reshape(-1), dtype=OIP_TO_NUMPY[datatype])
    return flat.view(np.uint8).data


def _pack_bytes(items: list[Any], where: str) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    pack = _LENGTH.pack
    for index, item in enumerate(items):
        if isinstance(item, str):
            try:
                raw = item.encode()
            except UnicodeEncodeError:
                raise TensorError(f"{where}: BYTES element {index} is not valid Unicode") from None
        elif isinstance(item, bytes | bytearray):
            raw = bytes(item)
        else:
            raise TensorError(
                f"{where}: BYTES elements must be str or bytes, got {type(item).__name__}"
            )
        try:
            append(pack(len(raw)))
        except struct.error:
            raise TensorError(f"{where}: BYTES element {index} is over 4 GiB") from None
        append(raw)
    return b"".join(parts)
