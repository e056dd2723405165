"""ONNX admission: real models are described, everything else is refused with a clear reason."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfleet.errors import InvalidArtifact, NotFound
from modelfleet.registry.onnx_info import PICKLE_MESSAGE, guess_framework, inspect_onnx


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _linear_model(**kwargs: object) -> onnx.ModelProto:
    """Y = X @ W + B with an initialiser, a symbolic batch and a fixed feature dim."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), "W")
    b = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["Y"], name="gemm")],
        "linear",
        [x],
        [y],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], **kwargs)
    model.ir_version = 9
    return model


def test_inspect_tiny_model(relu_path: Path) -> None:
    info = inspect_onnx(relu_path)
    assert info.io == {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert info.opset == 17
    assert info.opsets == {"": 17}
    assert info.ir_version == 8
    assert info.producer == "pytorch 2.3.0"
    assert info.framework == "pytorch"


def test_initialisers_are_not_inputs(tmp_path: Path) -> None:
    model = _linear_model(producer_name="tf2onnx", producer_version="1.16")
    # IR < 4 style: initialisers also listed as graph inputs; callers need not feed them.
    model.graph.input.extend(
        [
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 2]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [2]),
        ]
    )
    info = inspect_onnx(_save(model, tmp_path / "lin.onnx"))
    assert [i["name"] for i in info.io["inputs"]] == ["X"]
    assert info.io["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [-1, 2]}]
    assert info.framework == "tensorflow"


@pytest.mark.parametrize(
    ("elem", "datatype"),
    [
        (TensorProto.DOUBLE, "FP64"),
        (TensorProto.INT64, "INT64"),
        (TensorProto.BOOL, "BOOL"),
        (TensorProto.STRING, "BYTES"),
        (TensorProto.FLOAT16, "FP16"),
    ],
)
def test_datatypes_use_oip_names(tmp_path: Path, elem: int, datatype: str) -> None:
    x = helper.make_tensor_value_info("in", elem, [2, None])
    y = helper.make_tensor_value_info("out", elem, [2, None])
    graph = helper.make_graph([helper.make_node("Identity", ["in"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = inspect_onnx(_save(model, tmp_path / "id.onnx"))
    assert info.io["inputs"] == [{"name": "in", "datatype": datatype, "shape": [2, -1]}]
    assert info.framework == "other"
    assert info.producer == ""


def test_tensor_without_oip_datatype_keeps_its_onnx_type(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("in", TensorProto.BFLOAT16, ["n"])
    y = helper.make_tensor_value_info("out", TensorProto.BFLOAT16, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["in"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = inspect_onnx(_save(model, tmp_path / "bf16.onnx"))
    assert info.io["inputs"] == [
        {"name": "in", "datatype": None, "shape": [-1], "onnx_type": "tensor(bfloat16)"}
    ]


def test_sklearn_logistic_regression(tmp_path: Path) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(features, labels)
    model = skl2onnx.to_onnx(clf, features[:1].astype(np.float32))
    info = inspect_onnx(_save(model, tmp_path / "iris.onnx"))
    assert info.io["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    label, proba = info.io["outputs"]
    assert label == {"name": "output_label", "datatype": "INT64", "shape": [-1]}
    assert proba == {
        "name": "output_probability",
        "datatype": None,
        "shape": None,
        "onnx_type": "seq(map(int64,tensor(float)))",
    }
    assert info.producer == f"skl2onnx {skl2onnx.__version__}"
    assert info.framework == "sklearn"
    assert info.opsets[""] == info.opset
    assert "ai.onnx.ml" in info.opsets


@pytest.mark.parametrize(
    ("producer", "framework"),
    [
        ("skl2onnx", "sklearn"),
        ("pytorch", "pytorch"),
        ("PyTorch", "pytorch"),
        ("tf2onnx", "tensorflow"),
        ("keras2onnx", "tensorflow"),
        ("", "other"),
        ("onnx.helper", "other"),
    ],
)
def test_guess_framework(producer: str, framework: str) -> None:
    assert guess_framework(producer) == framework


# --- refusals --------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(InvalidArtifact) as caught:
        inspect_onnx(path)
    message = caught.value.message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    data = pickle.dumps({"coef": [1.0, 2.0], "intercept": 0.5}, protocol=protocol)
    assert _refusal(_write(tmp_path, "model.pkl", data)) == PICKLE_MESSAGE


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz"])
def test_joblib_is_refused(tmp_path: Path, compress: int | str) -> None:
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.ones(3)}, path, compress=compress)
    message = _refusal(path)
    assert message.startswith(PICKLE_MESSAGE)


def test_torch_style_zip_of_pickles_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state": 1}, protocol=2))
        archive.writestr("archive/version", "3\n")
    assert _refusal(path).startswith(PICKLE_MESSAGE)


def test_other_zip_is_refused(tmp_path: Path, relu_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(relu_path, "relu.onnx")
    assert "zip archive" in _refusal(path)


def test_text_is_refused(tmp_path: Path) -> None:
    message = _refusal(_write(tmp_path, "model.csv", "a,b,é\n1,2,3\n".encode()))
    assert "text file" in message


def test_empty_is_refused(tmp_path: Path) -> None:
    assert "empty" in _refusal(_write(tmp_path, "empty.onnx", b""))


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        inspect_onnx(tmp_path / "absent.onnx")


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    data = _linear_model().SerializeToString()
    message = _refusal(_write(tmp_path, "half.onnx", data[: len(data) // 2]))
    assert "not a valid ONNX protobuf" in message


def test_flipped_byte_is_refused(relu_path: Path, tmp_path: Path) -> None:
    # The middle of this weightless model is graph structure. A flip inside weights or a
    # doc string still parses as a valid model: only the manifest's sha256 catches those.
    data = bytearray(relu_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    assert "ONNX" in _refusal(_write(tmp_path, "flipped.onnx", bytes(data)))


def test_random_binary_is_refused(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(4096)
    assert _refusal(_write(tmp_path, "noise.bin", data))


def test_undefined_input_is_refused(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Add", ["X", "ghost"], ["Y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    message = _refusal(_save(model, tmp_path / "ghost.onnx"))
    assert message.startswith("the ONNX graph is invalid")
    assert "ghost" in message


def test_shape_errors_are_caught_by_the_full_check(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])
    w = helper.make_tensor_value_info("W", TensorProto.FLOAT, [5, 7])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 7])
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g", [x, w], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert _refusal(_save(model, tmp_path / "shape.onnx")).startswith("the ONNX graph is invalid")


def test_external_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(
        _linear_model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    message = _refusal(path)
    assert "external data" in message
    assert "weights.bin" in message


def test_refusal_messages_are_distinct(tmp_path: Path) -> None:
    data = _linear_model().SerializeToString()
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    ghost = helper.make_model(
        helper.make_graph([helper.make_node("Add", ["X", "nope"], ["Y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    samples = {
        "pickle": pickle.dumps({"a": 1}),
        "text": b"hello world\n",
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "invalid": ghost.SerializeToString(),
    }
    messages = {_refusal(_write(tmp_path, name, blob)) for name, blob in samples.items()}
    assert len(messages) == len(samples)
