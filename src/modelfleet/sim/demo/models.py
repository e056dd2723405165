"""The demo's models: the central classifier, a regressed release, and their evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.federation.training import TrainConfig, sgd_fit

#: Failures are ~3 % of processes; each training set repeats them this many times so the
#: classifier does not learn "never fails". (The plants prepare their local sets the same way.)
FAILURE_WEIGHT = 8


def oversample(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    failures = np.flatnonzero(labels == 1)
    index = np.concatenate([np.arange(labels.size), *([failures] * (FAILURE_WEIGHT - 1))])
    return features[index], labels[index]


def train_central(
    features: np.ndarray, labels: np.ndarray, *, epochs: int, path: Path
) -> tuple[ModelSpec, Path]:
    """A small MLP (the same declarative family federated jobs train), standardised inputs."""
    x, y = oversample(features, labels)
    spec = ModelSpec.parse(
        {
            "family": "mlp",
            "features": x.shape[1],
            "classes": 2,
            "hidden": [24],
            "activation": "tanh",
            "input_shift": x.mean(0).tolist(),
            "input_scale": x.std(0).tolist(),
        }
    )
    fit = sgd_fit(spec, init_weights(spec), x, y, TrainConfig(local_epochs=epochs, lr=0.1))
    onnx.save(build_onnx(spec, fit.weights), str(path))
    return spec, path


def slow_variant(source: Path, path: Path, *, layers: int = 600, width: int = 2048) -> Path:
    """A "regressed release": same answers and signature, but every row now runs through
    ``layers`` width x width products (one shared weight) whose result is multiplied by 0
    — the kind of accidental cost a bad export or a debugging branch adds."""
    model = onnx.load(str(source))
    graph = model.graph
    proba = next(o.name for o in graph.output if o.name == "probabilities")
    producer = next(n for n in graph.node if proba in n.output)
    producer.output[list(producer.output).index(proba)] = "probabilities.fast"
    rng = np.random.default_rng(0)
    graph.initializer.extend(
        [
            numpy_helper.from_array(
                rng.normal(
                    0, 0.05, (graph.input[0].type.tensor_type.shape.dim[1].dim_value, width)
                ).astype(np.float32),
                "slow.in",
            ),
            numpy_helper.from_array(
                rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32), "slow.w"
            ),
            numpy_helper.from_array(np.zeros((1, 1), np.float32), "slow.zero"),
        ]
    )
    nodes = [helper.make_node("MatMul", [graph.input[0].name, "slow.in"], ["slow.0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"slow.{i}", "slow.w"], [f"slow.{i}.m"]))
        nodes.append(helper.make_node("Tanh", [f"slow.{i}.m"], [f"slow.{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"slow.{layers}"], ["slow.sum"], keepdims=1),
        helper.make_node("Mul", ["slow.sum", "slow.zero"], ["slow.nothing"]),
        helper.make_node("Add", ["probabilities.fast", "slow.nothing"], [proba]),
    ]
    position = list(graph.node).index(producer) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@dataclass(frozen=True)
class Regression:
    """A regressed release built for this machine, and what it was built against."""

    path: Path
    layers: int
    row_ms: float  # its time for one row, in this process, one thread, as a site runs it
    target_ms: float


def row_ms(path: Path, features: int, *, runs: int = 5) -> float:
    """Median time of one single-row inference, one intra-op thread (the site's default)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    row = np.zeros((1, features), np.float32)
    session.run(None, {"X": row})  # the first run pays for allocation
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"X": row})
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def calibrated_slow_variant(
    source: Path, path: Path, *, features: int, target_ms: float, max_layers: int = 20_000
) -> Regression:
    """A regressed release whose own compute per row is at least ``target_ms`` on *this*
    machine, now: the cost of one layer is measured, then the layer count is set from it,
    so the regression is as large relative to v1 on a fast machine as on a slow one."""
    probe_layers = 20
    slow_variant(source, path, layers=probe_layers)
    per_layer = max(row_ms(path, features) / probe_layers, 1e-3)
    layers = min(max_layers, max(probe_layers, int(np.ceil(1.25 * target_ms / per_layer))))
    slow_variant(source, path, layers=layers)
    return Regression(path, layers, row_ms(path, features), target_ms)


@dataclass(frozen=True)
class Scores:
    accuracy: float
    balanced_accuracy: float  # mean recall of "no failure" and "failure"
    failure_recall: float


def score(path: Path, features: np.ndarray, labels: np.ndarray) -> Scores:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = session.run(["label"], {"X": features.astype(np.float32)})[0]
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in (0, 1) if (labels == c).any()]
    failure = float(np.mean(predicted[labels == 1] == 1)) if (labels == 1).any() else 0.0
    return Scores(float(np.mean(predicted == labels)), float(np.mean(recalls)), failure)
