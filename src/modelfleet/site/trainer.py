"""Local training at a site: its own data sets, the built-in trainer, custom trainers.

Data sets are named in the site's config (CSV or Parquet path, feature columns, label
column) and never leave the site: a trainer returns new weights, an example count and
metrics, nothing else. The hub can only ask for a trainer *by name*; the built-in one
trains the declarative model families of :mod:`modelfleet.federation.specs`. A site
operator may register their own (their code, their decision) in the site config as
``trainers: {name: "package.module:Object"}``; the object must follow :class:`Trainer`.
"""

from __future__ import annotations

import csv
import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.federation.specs import ModelSpec, Weights
from modelfleet.federation.training import FitResult, TrainConfig, eval_metrics, sgd_fit

BUILTIN = "builtin"


class DatasetConfig(BaseModel):
    """One local data set as the site config names it."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="CSV (with a header row) or Parquet file.")
    label: str = Field(default="label", description="Integer class label column (0..K-1).")
    features: list[str] | None = Field(
        default=None, description="Feature columns in model-input order; default: all but label."
    )
    eval_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Held out for local evaluation of the global model."
    )
    seed: int = Field(default=0, description="Seed of the train/eval split.")


@dataclass
class Dataset:
    name: str
    features: list[str]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    x_eval: npt.NDArray[np.float32]
    y_eval: npt.NDArray[np.int64]


@runtime_checkable
class Trainer(Protocol):
    """What a custom trainer implements; both methods run at the site only."""

    def fit(
        self, spec: ModelSpec, weights: Weights, data: Dataset, config: TrainConfig, seed: int
    ) -> FitResult:
        """Train from ``weights`` on ``data``; return the new weights (same names and
        shapes), the number of examples used and metrics such as ``train_loss``."""

    def evaluate(self, spec: ModelSpec, weights: Weights, data: Dataset) -> dict[str, float]:
        """Metrics of ``weights`` on the held-out part of ``data`` (may be empty)."""


class BuiltinTrainer:
    """Mini-batch SGD for the declarative families (with FedProx's proximal term)."""

    def fit(
        self, spec: ModelSpec, weights: Weights, data: Dataset, config: TrainConfig, seed: int
    ) -> FitResult:
        return sgd_fit(spec, weights, data.x, data.y, config, seed=seed)

    def evaluate(self, spec: ModelSpec, weights: Weights, data: Dataset) -> dict[str, float]:
        if len(data.y_eval) == 0:
            return {}
        return eval_metrics(spec, weights, data.x_eval, data.y_eval)


def load_trainer(target: str) -> Trainer:
    """Import ``module:attr`` from the site config; a class is instantiated without args."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"trainer {target!r} must be given as 'package.module:Object'")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"cannot load trainer {target!r}: {exc}") from exc
    trainer = obj() if isinstance(obj, type) else obj
    if not isinstance(trainer, Trainer):
        raise InvalidInput(f"trainer {target!r} lacks fit() and evaluate()")
    return trainer


def read_table(path: Path) -> tuple[list[str], dict[str, npt.NDArray[np.float64]]]:
    """A data set's columns and their values as float64 arrays, from a CSV file (header
    row, numbers only) or Parquet (needs pyarrow). The one reader of a site's data sets:
    training (here) and evaluation (``site/evaluation.py``) read a file the same way, so a
    file that trains also evaluates. ``InvalidInput`` says what is wrong with the file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            # Optional and untyped: imported by name so the rest stays strictly typed.
            pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:
            raise InvalidInput("Parquet data sets need pyarrow: pip install pyarrow") from exc
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise InvalidInput(f"cannot read {path}: {exc}") from exc
        columns = list(table.column_names)
        return columns, {
            c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), np.float64)
            for c in columns
        }
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = [row for row in reader if row]
    except (OSError, StopIteration) as exc:
        raise InvalidInput(f"cannot read {path}: {exc or 'empty file'}") from exc
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise InvalidInput(f"{path} holds non-numeric values: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[1] != len(header):
        raise InvalidInput(f"{path}: every row must have {len(header)} values")
    return header, {c: matrix[:, i] for i, c in enumerate(header)}


def load_dataset(name: str, config: DatasetConfig) -> Dataset:
    """Read, check and split one data set; ``InvalidInput`` says what is wrong with it."""
    if not config.path.is_file():
        raise NotFound(f"data set {name!r}: no file {config.path}")
    columns, data = read_table(config.path)
    if config.label not in data:
        raise InvalidInput(f"data set {name!r} has no label column {config.label!r}")
    features = config.features or [c for c in columns if c != config.label]
    missing = [f for f in features if f not in data]
    if missing:
        raise InvalidInput(f"data set {name!r} lacks feature columns {missing}")
    x = np.stack([data[f] for f in features], axis=1).astype(np.float32)
    labels = data[config.label]
    if (
        not np.all(np.isfinite(labels))
        or not np.all(labels == np.round(labels))
        or (labels.size and labels.min() < 0)
    ):
        raise InvalidInput(f"data set {name!r}: labels must be integers 0..K-1")
    y = labels.astype(np.int64)
    # A random evaluation hold-out; both parts keep the file's row order (the trainer
    # shuffles by its own seed, so the same rows train the same way anywhere).
    order = np.random.default_rng(config.seed).permutation(len(y))
    n_eval = round(config.eval_fraction * len(y))
    ev, tr = np.sort(order[:n_eval]), np.sort(order[n_eval:])
    return Dataset(name, features, x[tr], y[tr], x[ev], y[ev])


class DatasetCache:
    """Loads each data set once; reloads it when its file changes."""

    def __init__(self, configs: dict[str, DatasetConfig]) -> None:
        self.configs = configs
        self._cache: dict[str, tuple[float, Dataset]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Dataset:
        config = self.configs.get(name)
        if config is None:
            raise NotFound(f"no data set {name!r} in the site config")
        try:
            mtime = config.path.stat().st_mtime
        except OSError as exc:
            raise NotFound(f"data set {name!r}: cannot read {config.path}: {exc}") from exc
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            dataset = load_dataset(name, config)
            self._cache[name] = (mtime, dataset)
            return dataset


def check_fit(spec: ModelSpec, data: Dataset) -> str | None:
    """Why ``data`` cannot train ``spec``; None when it can."""
    if data.x.shape[1] != spec.features:
        return (
            f"data set {data.name!r} has {data.x.shape[1]} features, "
            f"the model expects {spec.features}"
        )
    if len(data.y) == 0:
        return f"data set {data.name!r} has no training rows"
    if int(data.y.max()) >= spec.classes:
        return f"data set {data.name!r} has labels >= {spec.classes}, the model's class count"
    return None


def describe_error(exc: Exception) -> str:
    return exc.message if isinstance(exc, ModelfleetError) else f"{type(exc).__name__}: {exc}"
