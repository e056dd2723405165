"""Tensor ``data`` in the JSON form of the Open Inference Protocol <-> numpy arrays.

This is the request hot path, so element conversion is left to numpy: one ``np.array`` pass
infers what the JSON held (booleans, integers, floats, strings, mixed) and the inferred kind is
validated against the declared datatype before one vectorised cast. Only ``BYTES`` touches items
in Python, because only there the item type cannot be read from a numpy dtype.

JSON has no NaN or Infinity, and orjson (like most JSON writers) emits ``null`` for them, so a
``null`` in a floating-point tensor decodes as NaN; Infinity therefore survives only the binary
form. Known leniency: numpy coerces a ``true`` mixed into integers to 1; catching it would need a
Python pass over every element, which the hot path cannot afford.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from modelfleet.errors import TensorError
from modelfleet.oip.datatypes import OIP_TO_NUMPY

__all__ = ["NUMPY_ERRORS", "brief", "data_from_json", "data_to_json", "fit_shape"]

#: Everything numpy raises for hostile input; translated to :class:`TensorError` at each call.
NUMPY_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, MemoryError, IndexError)

_INT_LIMITS: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(cast(Any, dtype)).min), int(np.iinfo(cast(Any, dtype)).max))
    for name, dtype in OIP_TO_NUMPY.items()
    if dtype.kind in "iu"
}
_NUMBER_OR_NULL = frozenset({int, float, type(None)})
_KIND_WORDS = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "non-integer numbers",
    "U": "strings",
    "S": "strings",
    "O": "nulls, objects or mixed values",
}


def brief(value: object, limit: int = 40) -> str:
    """A bounded description of a JSON value for an error message.

    Never a full ``repr``: the value may be attacker-sized or nested a thousand deep, where
    ``repr`` costs time and raises ``RecursionError``.
    """
    if isinstance(value, list):
        if any(isinstance(item, list | dict) for item in value[:8]):
            text = "[...]"
        else:
            text = repr(value[:8])
            if len(value) > 8:
                text = text[:-1] + ", ...]"
    elif isinstance(value, dict):
        text = "{...}" if value else "{}"
    elif isinstance(value, str):
        text = repr(value[:limit])
    elif value is None or isinstance(value, bool | int | float):
        text = repr(value)
    else:
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def data_from_json(
    data: Any, datatype: str, shape: tuple[int, ...], where: str
) -> npt.NDArray[Any]:
    """Decode a tensor's JSON ``data`` (flat row-major or nested to ``shape``) into numpy."""
    if not isinstance(data, list):
        raise TensorError(f"{where}: 'data' must be a JSON array, got {brief(data)}")
    if datatype == "BYTES":
        return fit_shape(_strings(data, where), shape, where)
    try:
        raw = np.array(data)
    except NUMPY_ERRORS:
        raise TensorError(
            f"{where}: 'data' must be a flat or evenly nested array of scalars"
        ) from None
    return fit_shape(_numbers(data, raw, datatype, where), shape, where)


def fit_shape(arr: npt.NDArray[Any], shape: tuple[int, ...], where: str) -> npt.NDArray[Any]:
    """Accept data already in ``shape`` or flat with the right count; reject any other nesting."""
    if arr.shape == shape:
        return arr
    count = math.prod(shape)
    if arr.size != count:
        raise TensorError(
            f"{where}: 'data' has {arr.size} elements but shape {list(shape)} needs {count}"
        )
    if arr.ndim != 1:
        raise TensorError(
            f"{where}: nested 'data' has shape {list(arr.shape)} but the declared shape is "
            f"{list(shape)}; send it flat or nested exactly as declared"
        )
    try:
        return arr.reshape(shape)
    except NUMPY_ERRORS as exc:
        raise TensorError(f"{where}: cannot shape data as {list(shape)}: {exc}") from None


def _numbers(data: list[Any], raw: npt.NDArray[Any], datatype: str, where: str) -> npt.NDArray[Any]:
    target = OIP_TO_NUMPY[datatype]
    kind = raw.dtype.kind
    if raw.size == 0:
        return np.empty(raw.shape, dtype=target)
    if datatype == "BOOL":
        if kind != "b":
            raise TensorError(f"{where}: BOOL data must be true/false, got {_KIND_WORDS[kind]}")
        return raw
    if kind == "b":
        raise TensorError(f"{where}: {datatype} data must be numbers, got booleans")
    limits = _INT_LIMITS.get(datatype)
    if limits is not None:
        if kind not in "iu":
            raw = _exact_integers(data, datatype, limits, where)
        return _in_range(raw, datatype, target, limits, where)
    if kind in "iuf" or (kind == "O" and set(map(type, raw.flat)) <= _NUMBER_OR_NULL):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out = raw.astype(target)
        except NUMPY_ERRORS:
            raise TensorError(f"{where}: {datatype} data must be numbers") from None
        infinite = np.isinf(out)
        if infinite.any():
            value = raw.reshape(-1)[infinite.reshape(-1)][:1].tolist()[0]
            raise TensorError(f"{where}: value {brief(value)} is out of range for {datatype}")
        return out
    raise TensorError(f"{where}: {datatype} data must be numbers, got {_KIND_WORDS[kind]}")


def _exact_integers(
    data: list[Any], datatype: str, limits: tuple[int, int], where: str
) -> npt.NDArray[Any]:
    """Re-read integers numpy inferred lossily: int64 and uint64 values mixed infer float64.

    Off the hot path: only UINT64 data above 2**63, or data that is invalid anyway, gets here.
    """
    try:
        obj = np.array(data, dtype=object)
    except NUMPY_ERRORS:  # pragma: no cover - the inferring pass already succeeded
        raise TensorError(f"{where}: 'data' must be evenly nested") from None
    items = obj.reshape(-1).tolist()
    kinds = set(map(type, items))
    if kinds <= {int}:
        low, high = limits
        smallest, largest = min(items), max(items)
        if smallest < low or largest > high:
            value = smallest if smallest < low else largest
            raise TensorError(
                f"{where}: value {value} is out of range for {datatype} [{low}, {high}]"
            )
        return obj.astype(OIP_TO_NUMPY[datatype])
    if bool in kinds:
        found = "booleans"
    elif kinds <= {int, float}:
        # orjson parses integers beyond 64 bits as floats, so this covers those too.
        found = "non-integer numbers or integers beyond 64 bits"
    else:
        found = "nulls, strings or objects"
    raise TensorError(f"{where}: {datatype} data must be integers, got {found}")


def _in_range(
    raw: npt.NDArray[Any],
    datatype: str,
    target: np.dtype[Any],
    limits: tuple[int, int],
    where: str,
) -> npt.NDArray[Any]:
    low, high = limits
    smallest, largest = int(raw.min()), int(raw.max())
    if smallest < low or largest > high:
        value = smallest if smallest < low else largest
        raise TensorError(f"{where}: value {value} is out of range for {datatype} [{low}, {high}]")
    return raw.astype(target)


def _strings(data: list[Any], where: str) -> npt.NDArray[Any]:
    try:
        arr = np.array(data, dtype=object)
    except NUMPY_ERRORS:
        raise TensorError(
            f"{where}: 'data' must be a flat or evenly nested array of strings"
        ) from None
    if arr.size and not set(map(type, arr.flat)) <= {str}:
        raise TensorError(f"{where}: BYTES data must be JSON strings (evenly nested)")
    return arr


def data_to_json(arr: npt.NDArray[Any], datatype: str, where: str) -> Any:
    """The flat row-major ``data`` value; numeric arrays go to orjson as arrays, unconverted."""
    flat = arr.reshape(-1)
    if datatype != "BYTES":
        if not flat.dtype.isnative:
            flat = flat.astype(flat.dtype.newbyteorder("="))
        return flat
    items = flat.tolist()
    for index, item in enumerate(items):
        if isinstance(item, str):
            continue
        if isinstance(item, bytes | bytearray):
            try:
                items[index] = bytes(item).decode()
            except UnicodeDecodeError:
                raise TensorError(
                    f"{where}: BYTES element {index} is not UTF-8 text; request binary data"
                ) from None
        else:
            raise TensorError(
                f"{where}: BYTES elements must be str or bytes, got {type(item).__name__}"
            )
    return items
