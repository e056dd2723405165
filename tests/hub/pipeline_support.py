"""Shared pieces of the pipeline tests: labelled data, an untrained (weak) spec-built
classifier, site configs, and the fleet file of docs/pipelines.md as the page shows it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from tests.docs.blocks import fenced_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"
SPEC = ModelSpec(family="softmax", features=4, classes=2)


def doc_fleet_file() -> dict[str, Any]:
    """The ``# fleet.yaml`` block of docs/pipelines.md, parsed, exactly as written."""
    block = next(b for b in fenced_blocks(DOC) if b.file_name == "fleet.yaml")
    doc = yaml.safe_load(block.text)
    assert isinstance(doc, dict)
    return doc


def quick(doc: dict[str, Any]) -> dict[str, Any]:
    """The doc's file with the waits of a test: a 1 s bake, 3 rounds (nothing else)."""
    fast = copy.deepcopy(doc)
    fast["deployments"][0]["strategy"]["bake_s"] = 1
    fast["pipelines"][0]["train"]["rounds"] = 3
    return fast


def labelled(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Four features; the label is whether the first two sum above zero."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    rows = np.column_stack([x, y.astype(np.float64)])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def weak_model(path: Path) -> Path:
    """Version 1, deliberately weak: an untrained softmax (all-zero weights, so it always
    answers class 0, right about half the time); the federated job starts from it."""
    onnx.save(build_onnx(SPEC, init_weights(SPEC)), str(path))
    return path


def site_config(root: Path, name: str, data: Path) -> Path:
    """Consent to fleet learning (training and evaluation alike) on data set ``plant``;
    which site trains and which only evaluates is the job's and the evaluation's selector."""
    config = {
        "datasets": {"plant": {"path": str(data), "label": "label", "eval_fraction": 0.3}},
        "federation": {"participate": True},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
