"""Open Inference Protocol v2 messages as plain dataclasses, independent of any HTTP framework.

The site server, the SDK and the gateway all speak these types; the codecs in
:mod:`modelfleet.oip.codec` translate them to and from the wire. Wire-only framing keys
(``binary_data_size`` on tensors, ``binary_data`` on requested outputs) are lifted out of the
``parameters`` dicts on decode and written back on encode, so callers never see framing and a
decoded message re-encodes in either JSON or binary form.

Tensor ``data`` is always a numpy array in the declared ``shape``. Numeric tensors use the
little-endian dtype from :data:`modelfleet.oip.datatypes.OIP_TO_NUMPY`. ``BYTES`` tensors are
object arrays: items are ``str`` when they arrived as JSON strings and ``bytes`` when they
arrived in the binary extension (onnxruntime string inputs accept ``str``; the encoders accept
either).

The dataclasses use identity equality (``eq=False``): field-wise ``==`` on numpy arrays yields an
array, which would make ``==`` between messages raise instead of answering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
]


@dataclass(slots=True, eq=False)
class InferInput:
    """One input tensor of an inference request."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class RequestedOutput:
    """An output the client asks for; ``binary_data`` None defers to the request default."""

    name: str
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class InferRequest:
    """An inference request; ``outputs`` None means "every output of the model"."""

    id: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class InferOutput:
    """One output tensor of an inference response."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class InferResponse:
    """An inference response; ``id`` echoes the request's id."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
