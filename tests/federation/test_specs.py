"""Model specs: gradients, ONNX equivalence, weight round trips, the tensor envelope."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.federation import wire
from modelfleet.federation.specs import (
    ModelSpec,
    build_onnx,
    flatten,
    init_weights,
    loss_and_grad,
    predict_proba,
    read_onnx,
    unflatten,
)

SPECS = [
    ModelSpec(family="softmax", features=5, classes=3),
    ModelSpec(family="logistic", features=4),
    ModelSpec(family="mlp", features=6, classes=4, hidden=(7, 5), activation="tanh"),
    ModelSpec(family="mlp", features=3, classes=2, hidden=(4,), activation="sigmoid"),
]


def _random(spec: ModelSpec, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, 0.5, s).astype(np.float32) for n, s in spec.shapes().items()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.family}-{s.activation}")
def test_gradient_matches_finite_differences(spec: ModelSpec) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, spec.features))
    y = rng.integers(0, spec.classes, 8)
    weights = _random(spec)
    _, grads = loss_and_grad(spec, weights, x, y, l2=0.01)
    eps = 1e-3
    for name in spec.names():
        for idx in list(np.ndindex(weights[name].shape))[:3]:
            plus = {k: v.astype(np.float64) for k, v in weights.items()}
            minus = {k: v.astype(np.float64) for k, v in weights.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric = (
                loss_and_grad(spec, plus, x, y, l2=0.01)[0]  # type: ignore[arg-type]
                - loss_and_grad(spec, minus, x, y, l2=0.01)[0]  # type: ignore[arg-type]
            ) / (2 * eps)
            assert grads[name][idx] == pytest.approx(numeric, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.family}-{s.activation}")
def test_onnx_outputs_equal_numpy_model(spec: ModelSpec, tmp_path) -> None:
    weights = _random(spec, 3)
    model = build_onnx(spec, weights)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(2).normal(size=(16, spec.features)).astype(np.float32)
    proba, label = ort.InferenceSession(str(path)).run(None, {"X": x})
    np.testing.assert_allclose(proba, predict_proba(spec, weights, x), atol=1e-5)
    np.testing.assert_array_equal(label, np.argmax(proba, axis=1))
    spec_back, weights_back = read_onnx(onnx.load(str(path)))
    assert spec_back == spec
    for name in spec.names():
        np.testing.assert_array_equal(weights_back[name], weights[name])


def test_flatten_round_trip_and_shape_errors() -> None:
    spec = SPECS[2]
    weights = init_weights(spec, seed=4)
    vector = flatten(spec, weights)
    assert vector.shape == (spec.size(),)
    back = unflatten(spec, vector)
    assert all(np.array_equal(back[n], weights[n]) for n in spec.names())
    with pytest.raises(InvalidInput, match="parameters"):
        unflatten(spec, vector[:-1])
    with pytest.raises(InvalidInput, match="shape"):
        flatten(spec, {**weights, "layer0.bias": np.zeros(2, np.float32)})


@pytest.mark.parametrize(
    "data",
    [
        {"family": "logistic", "features": 3, "classes": 3},
        {"family": "mlp", "features": 3},
        {"family": "softmax", "features": 0},
        {"family": "tree", "features": 3},
        {"family": "softmax", "features": 3, "code": "import os"},
    ],
)
def test_bad_specs_are_refused(data: dict) -> None:
    with pytest.raises(InvalidInput, match="invalid model spec"):
        ModelSpec.parse(data)


def test_not_a_spec_model_is_refused(tmp_path) -> None:
    from tests.conftest import write_tiny_onnx

    with pytest.raises(InvalidInput, match="fl init"):
        read_onnx(onnx.load(str(write_tiny_onnx(tmp_path / "t.onnx"))))


def test_wire_round_trip_and_hostile_bodies() -> None:
    arrays = {"delta": np.arange(5, dtype=np.float32), "m": np.ones((2, 3))}
    meta, back = wire.unpack(wire.pack({"num_examples": 3}, arrays))
    assert meta == {"num_examples": 3}
    np.testing.assert_array_equal(back["delta"], arrays["delta"])
    assert back["m"].dtype == np.float64
    body = wire.pack({}, arrays)
    for bad in (b"", b"PK\x03\x04" + body[4:], body[:-3], body + b"x", body[:10]):
        with pytest.raises(InvalidInput):
            wire.unpack(bad)
