"""A spec may carry a fixed input standardisation; numpy and ONNX agree on it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.federation.specs import (
    ModelSpec,
    build_onnx,
    init_weights,
    predict_proba,
    read_onnx,
)
from modelfleet.federation.training import TrainConfig, sgd_fit


def test_standardised_spec_trains_on_raw_values_and_exports_identically() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(300, 2, 400), rng.normal(1500, 180, 400)]).astype(np.float32)
    y = (x[:, 0] - 300 + (x[:, 1] - 1500) / 90 > 0).astype(np.int64)
    spec = ModelSpec.parse(
        {
            "family": "mlp",
            "features": 2,
            "classes": 2,
            "hidden": [8],
            "activation": "tanh",
            "input_shift": x.mean(0).tolist(),
            "input_scale": x.std(0).tolist(),
        }
    )
    fit = sgd_fit(spec, init_weights(spec), x, y, TrainConfig(local_epochs=20, lr=0.3))
    accuracy = (predict_proba(spec, fit.weights, x).argmax(1) == y).mean()
    assert accuracy > 0.9  # raw values this far from 0 do not train without standardising
    model = build_onnx(spec, fit.weights)
    session = ort.InferenceSession(model.SerializeToString())
    proba = session.run(["probabilities"], {"X": x})[0]
    np.testing.assert_allclose(proba, predict_proba(spec, fit.weights, x), atol=1e-5)
    again, _ = read_onnx(model)
    assert again == spec


@pytest.mark.parametrize(
    "bad",
    [
        {"input_shift": [0.0], "input_scale": [1.0, 1.0]},
        {"input_shift": [0.0, 0.0], "input_scale": [1.0, 0.0]},
        {"input_shift": [0.0, 0.0], "input_scale": []},
    ],
)
def test_bad_standardisation_is_refused(bad: dict) -> None:
    with pytest.raises(InvalidInput):
        ModelSpec.parse({"family": "softmax", "features": 2, "classes": 2, **bad})
