"""from_torch: the exported graph computes what the module computes, at any batch size.

torch is the ``torch`` extra; these tests need it installed (``pip install -e '.[dev,torch]'``)
and fail loudly rather than skip when it is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from modelfleet.errors import InvalidInput
from modelfleet.export import MissingDependency, from_torch

ATOL = 1e-5


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    X, _ = load_digits(return_X_y=True)
    return torch.from_numpy((X / 16.0).astype(np.float32))


@pytest.fixture(scope="module")
def mlp(digits: torch.Tensor) -> nn.Sequential:
    """Briefly trained, so batch-norm running statistics differ from their initial values and
    exporting in train mode (batch statistics, live dropout) would give different outputs."""
    torch.manual_seed(0)
    _, y = load_digits(return_X_y=True)
    target = torch.from_numpy(y)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(digits), target)
        loss.backward()
        optimizer.step()
    return model


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("sample_rows", [1, 8])
def test_mlp_matches_module_at_any_batch(
    mlp: nn.Sequential, digits: torch.Tensor, sample_rows: int, tmp_path: Path
):
    mlp.train()

    path = from_torch(mlp, digits[:sample_rows], path=tmp_path / "mlp.onnx")

    assert path == tmp_path / "mlp.onnx"
    assert mlp.training, "the module's own mode is restored after export"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["X"]
    assert [o.name for o in graph.output] == ["output"]
    assert _dims(graph.input[0]) == ["batch", 64]
    assert _dims(graph.output[0]) == ["batch", 10]
    mlp.eval()
    for rows in (1, 64, 37):
        x = digits[100 : 100 + rows]
        (got,) = _outputs(path, {"X": x.numpy()})
        with torch.no_grad():
            expected = mlp(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]


def test_default_path_numpy_sample_and_fixed_batch(mlp: nn.Sequential, digits: torch.Tensor):
    path = from_torch(mlp, digits[:4].numpy(), dynamic_batch=False, opset=18)
    try:
        assert path.suffix == ".onnx"
        assert path.name.startswith("Sequential-")
        model = onnx.load(str(path))
        assert _dims(model.graph.input[0]) == [4, 64]
        assert {o.domain: o.version for o in model.opset_import}[""] == 18
    finally:
        path.unlink()


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x) + self.b(y), torch.softmax(self.a(x), dim=-1)


def test_several_named_inputs_and_outputs_share_the_batch(tmp_path: Path):
    torch.manual_seed(0)
    module = TwoInputs()
    sample = (torch.randn(2, 4), torch.randn(2, 5))

    path = from_torch(
        module,
        sample,
        path=tmp_path / "two.onnx",
        input_names=("x", "y"),
        output_names=("total", "probs"),
    )

    graph = onnx.load(str(path)).graph
    assert {i.name: _dims(i) for i in graph.input} == {"x": ["batch", 4], "y": ["batch", 5]}
    assert [o.name for o in graph.output] == ["total", "probs"]
    x, y = torch.randn(9, 4), torch.randn(9, 5)
    got = _outputs(path, {"x": x.numpy(), "y": y.numpy()})
    with torch.no_grad():
        expected = module(x, y)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=ATOL)


def test_input_name_count_must_match_the_sample(mlp: nn.Sequential, digits: torch.Tensor):
    with pytest.raises(InvalidInput, match=r"1 sample input\(s\) but 2 input name\(s\)"):
        from_torch(mlp, digits[:2], input_names=("a", "b"))


def test_not_a_module_is_refused(digits: torch.Tensor):
    with pytest.raises(InvalidInput, match=r"function is not a torch\.nn\.Module"):
        from_torch(lambda x: x, digits[:2])


def test_scalar_sample_has_no_batch_dimension(mlp: nn.Sequential):
    with pytest.raises(InvalidInput, match="scalars"):
        from_torch(mlp, torch.tensor(1.0))


def test_export_failure_is_translated_and_leaves_no_file(mlp: nn.Sequential, tmp_path: Path):
    wrong_width = torch.zeros(2, 7)

    with pytest.raises(InvalidInput, match="torch could not export Sequential") as info:
        from_torch(mlp, wrong_width, path=tmp_path / "m.onnx")

    assert "must have same reduction dim" in str(info.value)
    assert info.value.__cause__ is not None
    assert list(tmp_path.iterdir()) == []


def test_missing_torch_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch", None)

    with pytest.raises(MissingDependency, match=r"modelfleet\[torch\]") as info:
        from_torch(object(), np.zeros((1, 2)))

    assert isinstance(info.value, ImportError)


def test_missing_onnxscript_says_what_to_install(
    mlp: nn.Sequential, digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "onnxscript", None)

    with pytest.raises(MissingDependency, match=r"onnxscript.*modelfleet\[torch\]"):
        from_torch(mlp, digits[:2])
