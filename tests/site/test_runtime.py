"""LoadedModel: loading, signature, warm-up and the checks around every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from modelfleet.errors import InvalidInput, ModelFailure, NotFound
from modelfleet.site.runtime import LoadedModel, TensorSpec

DIGEST = "sha256:" + "0" * 64


def _save(graph: onnx.GraphProto, path: Path, *, check: bool = True, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def add_model(path: Path, offset: float = 1.0, features: int = 4) -> Path:
    """Y = X + offset on FP32 [batch, features]."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", features])
    const = helper.make_tensor("c", TensorProto.FLOAT, [1], [offset])
    node = helper.make_node("Add", ["X", "c"], ["Y"])
    return _save(helper.make_graph([node], "add", [x], [y], initializer=[const]), path)


def int64_model(path: Path) -> Path:
    """Y = ids * 2 on INT64 [batch], plus a second output N = ids."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])
    y = helper.make_tensor_value_info("Y", TensorProto.INT64, ["batch"])
    n = helper.make_tensor_value_info("N", TensorProto.INT64, ["batch"])
    two = helper.make_tensor("two", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("Mul", ["ids", "two"], ["Y"]),
        helper.make_node("Identity", ["ids"], ["N"]),
    ]
    return _save(helper.make_graph(nodes, "int64", [ids], [y, n], initializer=[two]), path)


def string_model(path: Path) -> Path:
    """Y = (S == "yes") on a fixed-shape [2] string input (string Equal needs opset 19)."""
    s = helper.make_tensor_value_info("S", TensorProto.STRING, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.BOOL, [2])
    yes = helper.make_tensor("yes", TensorProto.STRING, [1], [b"yes"])  # type: ignore[list-item]
    node = helper.make_node("Equal", ["S", "yes"], ["Y"])
    graph = helper.make_graph([node], "strings", [s], [y], initializer=[yes])
    return _save(graph, path, opset=19)


def failing_model(path: Path) -> Path:
    """Loads fine, but reshaping [batch, 4] to [3, 5] fails whenever it runs."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, 5])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 5])
    node = helper.make_node("Reshape", ["X", "shape"], ["Y"])
    return _save(helper.make_graph([node], "bad", [x], [y], initializer=[shape]), path)


def unknown_op_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("NoSuchOperator", ["X"], ["Y"])
    return _save(helper.make_graph([node], "unknown", [x], [y]), path, check=False)


def load(path: Path, name: str = "m", version: int = 1) -> LoadedModel:
    return LoadedModel.load(path, name=name, version=version, digest=DIGEST)


@pytest.fixture
def adder(tmp_path: Path) -> LoadedModel:
    return load(add_model(tmp_path / "add.onnx", offset=2.0))


def test_signature_and_identity(adder: LoadedModel) -> None:
    assert adder.inputs == [TensorSpec("X", "FP32", (-1, 4))]
    assert adder.outputs == [TensorSpec("Y", "FP32", (-1, 4))]
    assert adder.first_dim_dynamic
    assert (adder.name, adder.version, adder.digest) == ("m", 1, DIGEST)
    assert str(adder) == "m:1"


def test_run_adds(adder: LoadedModel) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = adder.run({"X": x})
    assert list(out) == ["Y"]
    np.testing.assert_array_equal(out["Y"], x + 2)


def test_warm_up_returns_seconds(adder: LoadedModel) -> None:
    seconds = adder.warm_up()
    assert 0 <= seconds < 60


def test_int64_model_and_output_selection(tmp_path: Path) -> None:
    model = load(int64_model(tmp_path / "i.onnx"))
    assert model.inputs == [TensorSpec("ids", "INT64", (-1,))]
    model.warm_up()
    out = model.run({"ids": np.array([1, 5], dtype=np.int64)}, output_names=["N"])
    assert list(out) == ["N"]
    np.testing.assert_array_equal(out["N"], [1, 5])


def test_int64_refuses_float_without_casting(tmp_path: Path) -> None:
    model = load(int64_model(tmp_path / "i.onnx"))
    with pytest.raises(InvalidInput, match=r"'ids'.*INT64.*float64"):
        model.run({"ids": np.array([1.0, 5.0])})
    with pytest.raises(InvalidInput, match=r"'ids'.*INT64.*int32"):
        model.run({"ids": np.array([1, 5], dtype=np.int32)})


def test_string_model(tmp_path: Path) -> None:
    model = load(string_model(tmp_path / "s.onnx"))
    assert model.inputs == [TensorSpec("S", "BYTES", (2,))]
    assert not model.first_dim_dynamic
    model.warm_up()
    out = model.run({"S": np.array(["yes", "no"], dtype=object)})
    np.testing.assert_array_equal(out["Y"], [True, False])
    with pytest.raises(InvalidInput, match=r"'S'.*BYTES"):
        model.run({"S": np.zeros(2, dtype=np.float32)})


def test_missing_and_extra_inputs(adder: LoadedModel) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    with pytest.raises(InvalidInput, match=r"missing input\(s\) \['X'\]"):
        adder.run({})
    with pytest.raises(InvalidInput, match=r"unknown input\(s\) \['Z'\]"):
        adder.run({"X": x, "Z": x})
    with pytest.raises(InvalidInput, match="numpy array"):
        adder.run({"X": [[0.0] * 4]})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="unknown output"):
        adder.run({"X": x}, output_names=["nope"])


def test_wrong_shape_is_a_client_inference_error(adder: LoadedModel) -> None:
    with pytest.raises(ModelFailure) as info:
        adder.run({"X": np.zeros((1, 3), dtype=np.float32)})
    assert info.value.code == "inference_error"
    assert info.value.status == 400
    assert "\n" not in info.value.message
    assert not info.value.message.startswith("[ONNXRuntimeError]")


def test_warm_up_failure(tmp_path: Path) -> None:
    model = load(failing_model(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFailure) as info:
        model.warm_up()
    assert info.value.code == "warmup_error"
    assert "\n" not in info.value.message


def test_run_failure_is_inference_error(tmp_path: Path) -> None:
    model = load(failing_model(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFailure) as info:
        model.run({"X": np.zeros((2, 4), dtype=np.float32)})
    assert info.value.code == "inference_error"
    assert "\n" not in info.value.message


def test_session_error_on_unknown_operator(tmp_path: Path) -> None:
    with pytest.raises(ModelFailure) as info:
        load(unknown_op_model(tmp_path / "u.onnx"))
    assert info.value.code == "session_error"
    assert "m:1" in info.value.message


def test_session_error_on_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(ModelFailure) as info:
        load(path)
    assert info.value.code == "session_error"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load(tmp_path / "absent.onnx")


def test_thread_counts_validated(tmp_path: Path) -> None:
    path = add_model(tmp_path / "a.onnx")
    with pytest.raises(InvalidInput, match="intra_op_threads"):
        LoadedModel.load(path, name="m", version=1, digest=DIGEST, intra_op_threads=-1)
    model = LoadedModel.load(
        path, name="m", version=1, digest=DIGEST, intra_op_threads=2, inter_op_threads=2
    )
    model.warm_up()


_DTYPES = ["float64", "float16", "int64", "int32", "uint8", "bool", ">f4", "U3", "O"]


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(_DTYPES), rows=st.integers(0, 3))
def test_any_wrong_dtype_is_refused(
    tmp_path_factory: pytest.TempPathFactory, dtype: str, rows: int
) -> None:
    model = _shared_adder(tmp_path_factory)
    with pytest.raises(InvalidInput, match=r"'X' expects FP32"):
        model.run({"X": np.zeros((rows, 4), dtype=dtype)})


_CACHE: dict[str, LoadedModel] = {}


def _shared_adder(factory: pytest.TempPathFactory) -> LoadedModel:
    if "adder" not in _CACHE:
        _CACHE["adder"] = load(add_model(factory.mktemp("shared") / "add.onnx"))
    return _CACHE["adder"]
