"""Admission check and introspection of ONNX files.

Nothing the hub accepts may run user code when loaded, so Python pickles (plain, joblib,
zip archives such as ``torch.save``) are recognised from their bytes and refused with a
pointer to the exporters, before any parser sees them. A file that passes becomes one
self-contained graph that ``onnx.checker`` accepts in full, and its I/O signature is read
so sites can validate requests without loading the model.
"""

from __future__ import annotations

import bz2
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from modelfleet.errors import InvalidArtifact, NotFound
from modelfleet.oip.datatypes import ONNX_ELEM_TO_OIP

__all__ = ["OnnxInfo", "inspect_onnx"]

PICKLE_MESSAGE = (
    "this is a Python pickle; modelfleet accepts only ONNX models — "
    "export with modelfleet.export.from_sklearn/from_torch"
)
_HEAD_BYTES = 4096
_DEFAULT_DOMAINS = ("", "ai.onnx")
_TEXT_CONTROL_OK = frozenset("\t\n\r\f\v")


@dataclass(frozen=True)
class OnnxInfo:
    """What the registry records about an accepted model."""

    #: ``{"inputs": [...], "outputs": [...]}``; each ``{"name", "datatype", "shape"}``,
    #: plus ``"onnx_type"`` when ``datatype`` is None (sequences, maps, exotic tensors).
    io: dict[str, Any]
    #: Default-domain (ai.onnx) opset.
    opset: int
    #: Every imported opset by domain ("" for ai.onnx), e.g. {"": 17, "ai.onnx.ml": 1}.
    opsets: dict[str, int]
    ir_version: int
    #: ``"<producer_name> <producer_version>"``, e.g. ``"skl2onnx 1.20.0"``; may be empty.
    producer: str
    #: Guessed from the producer: sklearn, pytorch, tensorflow or other.
    framework: str


def inspect_onnx(path: Path) -> OnnxInfo:
    """Validate a candidate model file and describe it; :class:`InvalidArtifact` if refused."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except FileNotFoundError as exc:
        raise NotFound(f"no such file: {path}") from exc
    except OSError as exc:
        raise InvalidArtifact(f"cannot read {path}: {exc}") from exc
    _refuse_by_content(path, head)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidArtifact(
            f"the file is not a valid ONNX protobuf (truncated or corrupted): {_first_line(exc)}"
        ) from exc
    if not model.HasField("graph") or model.ir_version <= 0:
        raise InvalidArtifact("the file is not an ONNX model: it has no graph or no IR version")
    _refuse_external_data(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InvalidArtifact(f"the ONNX graph is invalid: {_first_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArtifact(
            "the model contains text that is not valid UTF-8; the file is corrupted"
        ) from exc
    opsets = {_text(imp.domain, "an opset domain"): int(imp.version) for imp in model.opset_import}
    opset = next((opsets[d] for d in _DEFAULT_DOMAINS if d in opsets), None)
    if opset is None:
        raise InvalidArtifact("the model imports no default-domain (ai.onnx) opset")
    producer_name = _text(model.producer_name, "the producer name")
    producer = f"{producer_name} {_text(model.producer_version, 'the producer version')}".strip()
    return OnnxInfo(
        io=_io_signature(model.graph),
        opset=opset,
        opsets={("" if d == "ai.onnx" else d): v for d, v in opsets.items()},
        ir_version=int(model.ir_version),
        producer=producer,
        framework=guess_framework(producer_name),
    )


def guess_framework(producer_name: str) -> str:
    """The training framework an exporter name implies; "other" when it is not known."""
    name = producer_name.strip().lower()
    if name in ("skl2onnx", "sklearn", "scikit-learn", "onnxmltools.sklearn"):
        return "sklearn"
    if name in ("pytorch", "torch") or name.startswith("pytorch"):
        return "pytorch"
    if name in ("tf2onnx", "keras2onnx", "tensorflow", "keras") or name.startswith("tf2onnx"):
        return "tensorflow"
    return "other"


def _text(value: object, what: str) -> str:
    """Protobuf hands back bytes for string fields that are not UTF-8: a corrupted file."""
    if not isinstance(value, str):
        raise InvalidArtifact(f"{what} is not valid UTF-8; the file is corrupted")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: Openings of protocol 0/1 pickles: a dict/list/tuple/instance mark, a global, or an empty
#: dict/list memoised with BINPUT/LONG_BINPUT/MEMOIZE.
_OLD_PICKLE_RE = re.compile(rb"\((dp|lp|tp)\d|\(i[\w.]+\n|c[\w.]+\n[\w.]+\n|[}\]](q|r|\x94)")


def _is_pickle(data: bytes) -> bool:
    """Protocols 2-5 start with PROTO (0x80) and the protocol number; 0-1 by their opcodes."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    return _OLD_PICKLE_RE.match(data) is not None


def _decompressed_head(head: bytes) -> tuple[str, bytes] | None:
    """The first bytes inside a gzip/zlib/bz2/xz stream (how joblib compresses pickles)."""
    decoders: list[tuple[str, bytes, Any]] = [
        ("gzip", b"\x1f\x8b", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
        ("bzip2", b"BZh", bz2.BZ2Decompressor),
        ("xz", b"\xfd7zXZ\x00", lzma.LZMADecompressor),
    ]
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        decoders.append(("zlib", head[:2], zlib.decompressobj))
    for kind, magic, factory in decoders:
        if head.startswith(magic):
            try:
                return kind, bytes(factory().decompress(head))[:16]
            except (zlib.error, OSError, EOFError, lzma.LZMAError):
                return kind, b""
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in _TEXT_CONTROL_OK for ch in text)


def _refuse_by_content(path: Path, head: bytes) -> None:
    """Refuse what is recognisably not an ONNX protobuf, naming what it is instead."""
    if not head:
        raise InvalidArtifact("the file is empty; expected an ONNX model")
    if _is_pickle(head):
        raise InvalidArtifact(PICKLE_MESSAGE)
    if head.startswith(b"PK\x03\x04"):
        raise InvalidArtifact(_describe_zip(path))
    inner = _decompressed_head(head)
    if inner is not None:
        kind, start = inner
        if _is_pickle(start):
            raise InvalidArtifact(f"{PICKLE_MESSAGE} (it is {kind}-compressed, as joblib writes)")
        raise InvalidArtifact(
            f"this is a {kind}-compressed file; modelfleet accepts only uncompressed ONNX models"
        )
    if head.startswith(b"\x93NUMPY"):
        raise InvalidArtifact("this is a NumPy array file (.npy), not an ONNX model")
    if _looks_like_text(head):
        raise InvalidArtifact(
            "this is a text file, not an ONNX model (a binary .onnx protobuf is required)"
        )


def _describe_zip(path: Path) -> str:
    """Zip archives holding pickles (torch.save, some joblib files) get the pickle message."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    if any(name.endswith((".pkl", ".pickle", "data.pkl")) for name in names):
        return f"{PICKLE_MESSAGE} (a zip archive of pickles, as torch.save writes)"
    return "this is a zip archive, not an ONNX model (upload the single .onnx file)"


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph, its nodes' attributes and nested subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _refuse_external_data(model: onnx.ModelProto) -> None:
    """Sites receive one file; weights in side files would be missing there."""
    tensors = list(_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_node_tensors(node))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise InvalidArtifact(
                f"tensor {tensor.name!r} is stored as external data ({location!r}); modelfleet "
                "ships single self-contained files — save with save_as_external_data=False"
            )


def _type_text(tp: onnx.TypeProto) -> str:
    """ONNX Runtime style type names: tensor(float), seq(map(int64,tensor(float)))."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_elem_name(tp.tensor_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({_elem_name(tp.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_text(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        key = _elem_name(tp.map_type.key_type)
        return f"map({key},{_type_text(tp.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(tp.optional_type.elem_type)})"
    return "unknown"


def _elem_name(elem_type: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        return f"elem{elem_type}"


def _shape(tensor_type: Any) -> list[int] | None:
    """Dims as ints, -1 for symbolic or unknown ones; None when even the rank is unknown."""
    if not tensor_type.HasField("shape"):
        return None
    return [
        int(dim.dim_value) if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim
    ]


def _describe_value(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tp = value.type
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        datatype = ONNX_ELEM_TO_OIP.get(tp.tensor_type.elem_type)
        entry: dict[str, Any] = {
            "name": _text(value.name, "a graph input/output name"),
            "datatype": datatype,
            "shape": _shape(tp.tensor_type),
        }
        if datatype is None:
            entry["onnx_type"] = _type_text(tp)
        return entry
    shape = _shape(tp.sparse_tensor_type) if kind == "sparse_tensor_type" else None
    name = _text(value.name, "a graph input/output name")
    return {"name": name, "datatype": None, "shape": shape, "onnx_type": _type_text(tp)}


def _io_signature(graph: onnx.GraphProto) -> dict[str, Any]:
    """Inputs a caller must feed: graph inputs that are not also initialisers (IR < 4)."""
    initialised = {init.name for init in graph.initializer}
    return {
        "inputs": [_describe_value(v) for v in graph.input if v.name not in initialised],
        "outputs": [_describe_value(v) for v in graph.output],
    }
