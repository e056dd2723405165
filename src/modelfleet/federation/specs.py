"""Trainable model families described by data, never by code.

The hub never ships code to a site, so a federated job names a *family* (softmax or
logistic regression, a multilayer perceptron) and its shape; the site's built-in trainer
knows how to train it. From the same :class:`ModelSpec` and named weight arrays this module
gives the numpy forward/backward pass used for local training and the ONNX graph used for
serving, so a trained result is at once a normal, signed, deployable version whose ONNX
outputs equal the numpy model's predictions.

Weights are named ``layer{i}.weight`` (shape ``[fan_in, fan_out]``) and ``layer{i}.bias``
(``[fan_out]``); a flat float32 vector in :meth:`ModelSpec.names` order is what travels
between site and hub.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfleet.errors import InvalidInput

Array = npt.NDArray[np.float32]
Weights = dict[str, Array]

#: ONNX metadata key holding the spec, so a registered version can be trained again.
SPEC_METADATA_KEY = "modelfleet.fl.spec"
INPUT_NAME = "X"
PROBA_NAME = "probabilities"
LABEL_NAME = "label"
OPSET = 17

Family = Literal["softmax", "logistic", "mlp"]
Activation = Literal["relu", "tanh", "sigmoid"]


class ModelSpec(BaseModel):
    """A model family and its shape; everything a site needs to train it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Family = Field(description="softmax (multinomial), logistic (binary) or mlp.")
    features: int = Field(gt=0, le=1_000_000, description="Width of the input X.")
    classes: int = Field(default=2, ge=2, le=100_000, description="Number of class labels.")
    hidden: tuple[int, ...] = Field(default=(), description="MLP hidden layer sizes.")
    activation: Activation = Field(default="relu", description="MLP hidden activation.")
    input_shift: tuple[float, ...] = Field(
        default=(),
        description="Fixed standardisation, part of the model: X is replaced by "
        "(X - input_shift) / input_scale before the first layer, so sites and clients send "
        "raw sensor values. Empty: no standardisation.",
    )
    input_scale: tuple[float, ...] = Field(default=(), description="See input_shift.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.family == "logistic" and self.classes != 2:
            raise ValueError("logistic regression has exactly 2 classes; use softmax")
        if self.family == "mlp" and not self.hidden:
            raise ValueError("an mlp needs at least one hidden layer (hidden: [32])")
        if self.family != "mlp" and self.hidden:
            raise ValueError(f"{self.family} regression has no hidden layers")
        if any(h <= 0 for h in self.hidden):
            raise ValueError("hidden layer sizes must be positive")
        if len(self.input_shift) != len(self.input_scale) or (
            self.input_shift and len(self.input_shift) != self.features
        ):
            raise ValueError("input_shift and input_scale need one value per feature each")
        if any(not (v > 0 and np.isfinite(v)) for v in self.input_scale):
            raise ValueError("input_scale values must be positive and finite")
        if any(not np.isfinite(v) for v in self.input_shift):
            raise ValueError("input_shift values must be finite")
        return self

    @classmethod
    def parse(cls, data: object) -> ModelSpec:
        """Validate untrusted input (a job file, a task) into a spec; ``InvalidInput`` if bad."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(f"invalid model spec: {_first_error(exc)}") from exc

    @property
    def outputs(self) -> int:
        """Width of the last layer: one logit for logistic, one per class otherwise."""
        return 1 if self.family == "logistic" else self.classes

    def layer_sizes(self) -> list[tuple[int, int]]:
        widths = [self.features, *self.hidden, self.outputs]
        return list(itertools.pairwise(widths))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(self.layer_sizes()):
            shapes[f"layer{i}.weight"] = (fan_in, fan_out)
            shapes[f"layer{i}.bias"] = (fan_out,)
        return shapes

    def names(self) -> list[str]:
        return list(self.shapes())

    def size(self) -> int:
        """Number of parameters."""
        return sum(int(np.prod(s)) for s in self.shapes().values())


def _first_error(exc: ValidationError) -> str:
    """The first problem as ``field: message``, without pydantic's "Value error, " prefix
    on the messages our own validators raise."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def init_weights(spec: ModelSpec, seed: int = 0) -> Weights:
    """Glorot-uniform weights for an MLP, zeros for linear models (their loss is convex)."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for i, (fan_in, fan_out) in enumerate(spec.layer_sizes()):
        if spec.family == "mlp":
            limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
            w = rng.uniform(-limit, limit, size=(fan_in, fan_out))
        else:
            w = np.zeros((fan_in, fan_out))
        weights[f"layer{i}.weight"] = w.astype(np.float32)
        weights[f"layer{i}.bias"] = np.zeros(fan_out, np.float32)
    return weights


def check_weights(spec: ModelSpec, weights: Mapping[str, npt.NDArray[np.generic]]) -> Weights:
    """The weights as float32 in spec order; ``InvalidInput`` on a missing or misshapen array."""
    checked: Weights = {}
    for name, shape in spec.shapes().items():
        if name not in weights:
            raise InvalidInput(f"weights lack {name!r} (the spec needs {spec.names()})")
        array = np.asarray(weights[name])
        if tuple(array.shape) != shape:
            raise InvalidInput(f"weight {name!r} has shape {array.shape}, the spec needs {shape}")
        checked[name] = np.ascontiguousarray(array, dtype=np.float32)
    extra = sorted(set(weights) - set(checked))
    if extra:
        raise InvalidInput(f"weights the spec does not know: {', '.join(extra)}")
    return checked


def flatten(spec: ModelSpec, weights: Mapping[str, npt.NDArray[np.generic]]) -> Array:
    """One float32 vector in spec order: the form strategies aggregate."""
    checked = check_weights(spec, weights)
    return np.concatenate([checked[n].ravel() for n in spec.names()]).astype(np.float32)


def unflatten(spec: ModelSpec, vector: npt.NDArray[np.generic]) -> Weights:
    flat = np.asarray(vector, dtype=np.float32).ravel()
    if flat.size != spec.size():
        raise InvalidInput(f"expected {spec.size()} parameters for this spec, got {flat.size}")
    weights: Weights = {}
    offset = 0
    for name, shape in spec.shapes().items():
        count = int(np.prod(shape))
        weights[name] = flat[offset : offset + count].reshape(shape).copy()
        offset += count
    return weights


# --- numpy model ---------------------------------------------------------------------


def _activate(kind: str, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "tanh":
        return np.tanh(z)
    return _sigmoid(z)


def _activation_grad(
    kind: str, z: npt.NDArray[np.float64], a: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    if kind == "relu":
        return (z > 0).astype(np.float64)
    if kind == "tanh":
        return 1.0 - a * a
    return a * (1.0 - a)


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free
    return out


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def _layers(
    spec: ModelSpec, weights: Mapping[str, Array], x: npt.NDArray[np.float64]
) -> tuple[list[npt.NDArray[np.float64]], list[npt.NDArray[np.float64]]]:
    """Pre-activations and activations of every layer (activations[0] is the input)."""
    if spec.input_shift:
        x = (x - np.asarray(spec.input_shift)) / np.asarray(spec.input_scale)
    acts = [x]
    pres: list[npt.NDArray[np.float64]] = []
    n_layers = len(spec.layer_sizes())
    for i in range(n_layers):
        w = weights[f"layer{i}.weight"].astype(np.float64)
        b = weights[f"layer{i}.bias"].astype(np.float64)
        z = acts[-1] @ w + b
        pres.append(z)
        if i < n_layers - 1:
            acts.append(_activate(spec.activation, z))
    return pres, acts


def predict_proba(
    spec: ModelSpec, weights: Mapping[str, Array], x: npt.NDArray[np.generic]
) -> npt.NDArray[np.float32]:
    """Class probabilities ``[batch, classes]``, exactly what the ONNX graph outputs."""
    pres, _ = _layers(spec, weights, np.asarray(x, dtype=np.float64))
    logits = pres[-1]
    if spec.family == "logistic":
        p1 = _sigmoid(logits[:, 0])
        return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
    return _softmax(logits).astype(np.float32)


def predict(
    spec: ModelSpec, weights: Mapping[str, Array], x: npt.NDArray[np.generic]
) -> npt.NDArray[np.int64]:
    labels: npt.NDArray[np.int64] = np.argmax(predict_proba(spec, weights, x), axis=1)
    return labels.astype(np.int64)


def loss_and_grad(
    spec: ModelSpec,
    weights: Mapping[str, Array],
    x: npt.NDArray[np.generic],
    y: npt.NDArray[np.integer],
    l2: float = 0.0,
) -> tuple[float, dict[str, npt.NDArray[np.float64]]]:
    """Mean cross-entropy (+ ``l2``/2 ||W||^2 on weight matrices) and its gradient."""
    xf = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    n = max(len(labels), 1)
    pres, acts = _layers(spec, weights, xf)
    logits = pres[-1]
    if spec.family == "logistic":
        p = _sigmoid(logits[:, 0])
        eps = 1e-12
        loss = float(-np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps)))
        delta = ((p - labels) / n)[:, None]
    else:
        probs = _softmax(logits)
        picked = probs[np.arange(len(labels)), labels]
        loss = float(-np.mean(np.log(picked + 1e-12)))
        delta = probs
        delta[np.arange(len(labels)), labels] -= 1.0
        delta /= n
    grads: dict[str, npt.NDArray[np.float64]] = {}
    for i in range(len(pres) - 1, -1, -1):
        w = weights[f"layer{i}.weight"].astype(np.float64)
        grads[f"layer{i}.weight"] = acts[i].T @ delta + l2 * w
        grads[f"layer{i}.bias"] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ w.T) * _activation_grad(spec.activation, pres[i - 1], acts[i])
    if l2:
        loss += (
            0.5
            * l2
            * sum(
                float(np.sum(weights[f"layer{i}.weight"].astype(np.float64) ** 2))
                for i in range(len(pres))
            )
        )
    return loss, grads


def evaluate(
    spec: ModelSpec,
    weights: Mapping[str, Array],
    x: npt.NDArray[np.generic],
    y: npt.NDArray[np.integer],
) -> dict[str, float]:
    """Loss and accuracy of ``weights`` on ``(x, y)``."""
    if len(y) == 0:
        return {}
    loss, _ = loss_and_grad(spec, weights, x, y)
    accuracy = float(np.mean(predict(spec, weights, x) == np.asarray(y)))
    return {"loss": loss, "accuracy": accuracy}


# --- ONNX ----------------------------------------------------------------------------


def build_onnx(spec: ModelSpec, weights: Mapping[str, Array]) -> onnx.ModelProto:
    """The serving graph: ``X [batch, features] -> probabilities [batch, classes], label``.

    The spec is kept in the model's metadata and the initializers carry the weight names,
    so :func:`read_onnx` recovers both and a registered version can seed the next job.
    """
    checked = check_weights(spec, weights)
    nodes = []
    initializers = [numpy_helper.from_array(checked[n], n) for n in spec.names()]
    current = INPUT_NAME
    if spec.input_shift:
        initializers += [
            numpy_helper.from_array(np.asarray(spec.input_shift, np.float32), "input.shift"),
            numpy_helper.from_array(np.asarray(spec.input_scale, np.float32), "input.scale"),
        ]
        nodes += [
            helper.make_node("Sub", [INPUT_NAME, "input.shift"], ["input.centred"]),
            helper.make_node("Div", ["input.centred", "input.scale"], ["input.standard"]),
        ]
        current = "input.standard"
    n_layers = len(spec.layer_sizes())
    for i in range(n_layers):
        out = f"layer{i}.z"
        nodes.append(
            helper.make_node("Gemm", [current, f"layer{i}.weight", f"layer{i}.bias"], [out])
        )
        current = out
        if i < n_layers - 1:
            kind = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[spec.activation]
            nodes.append(helper.make_node(kind, [current], [f"layer{i}.a"]))
            current = f"layer{i}.a"
    if spec.family == "logistic":
        initializers.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        nodes += [
            helper.make_node("Sigmoid", [current], ["p1"]),
            helper.make_node("Sub", ["one", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], [PROBA_NAME], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Softmax", [current], [PROBA_NAME], axis=1))
    nodes.append(helper.make_node("ArgMax", [PROBA_NAME], [LABEL_NAME], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        f"modelfleet-{spec.family}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", spec.features])],
        [
            helper.make_tensor_value_info(PROBA_NAME, TensorProto.FLOAT, ["batch", spec.classes]),
            helper.make_tensor_value_info(LABEL_NAME, TensorProto.INT64, ["batch"]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelfleet-fl"
    )
    model.ir_version = 8
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec.model_dump_json()})
    onnx.checker.check_model(model)
    return model


def read_onnx(model: onnx.ModelProto) -> tuple[ModelSpec, Weights]:
    """Spec and weights of a graph built by :func:`build_onnx`; ``InvalidInput`` otherwise."""
    props = {p.key: p.value for p in model.metadata_props}
    if SPEC_METADATA_KEY not in props:
        raise InvalidInput(
            "this model was not built from a federated model spec, so it cannot be trained "
            "federatedly; create one with `modelfleet fl init`"
        )
    try:
        spec = ModelSpec.parse(json.loads(props[SPEC_METADATA_KEY]))
    except ValueError as exc:
        raise InvalidInput(f"the model's spec metadata is not JSON: {exc}") from exc
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return spec, check_weights(spec, {n: arrays[n] for n in spec.names() if n in arrays})
