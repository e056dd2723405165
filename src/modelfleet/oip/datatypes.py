"""Datatype names shared by ONNX, numpy and the Open Inference Protocol."""

from __future__ import annotations

import numpy as np

#: OIP datatype -> numpy dtype (little-endian). BYTES maps to object (str/bytes items).
OIP_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: ONNX TensorProto element type number -> OIP datatype (types both protocols share).
ONNX_ELEM_TO_OIP: dict[int, str] = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",  # ONNX string
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}

#: onnxruntime's type strings ("tensor(float)") -> OIP datatype.
ORT_TYPE_TO_OIP: dict[str, str] = {
    "tensor(float)": "FP32",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(uint16)": "UINT16",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
}


def numpy_to_oip(dtype: np.dtype[np.generic]) -> str:
    """The OIP datatype for a numpy dtype; ``ValueError`` for types OIP cannot carry."""
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    for name, candidate in OIP_TO_NUMPY.items():
        if name != "BYTES" and candidate == dtype.newbyteorder("<"):
            return name
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")
