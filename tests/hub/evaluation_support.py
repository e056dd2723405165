"""Shared pieces of the evaluation tests: labelled data, a good and a bad classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelfleet.export import from_sklearn

#: A feature value every row carries: if it ever reaches the hub, a row left the site.
SENTINEL = 7777.4242


def labelled(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two informative features, one noise feature and the sentinel column; the label is
    whether the informative features sum above zero."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return np.column_stack([x, np.full(n, SENTINEL)]), y


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def classifiers(root: Path) -> tuple[Path, Path]:
    """ONNX files of a good classifier and of a bad one (trained on inverted labels)."""
    x, y = labelled(1, 400)
    good = from_sklearn(LogisticRegression().fit(x, y), x, path=root / "good.onnx")
    bad = from_sklearn(LogisticRegression().fit(x, 1 - y), x, path=root / "bad.onnx")
    return good, bad


def regressors(root: Path) -> tuple[Path, Path]:
    """A good regressor of ``x0 + x1`` and a bad one (fitted to its negation)."""
    x, _ = labelled(2, 400)
    target = x[:, 0] + x[:, 1]
    good = from_sklearn(LinearRegression().fit(x, target), x, path=root / "good-r.onnx")
    bad = from_sklearn(LinearRegression().fit(x, -target), x, path=root / "bad-r.onnx")
    return good, bad


def imbalanced(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Machine-failure-like data: the label (a failure) is ``x0 > 1.645``, about 5 % of
    the rows; the other columns as in :func:`labelled`."""
    x, _ = labelled(seed, n)
    return x, (x[:, 0] > 1.645).astype(np.int64)


def failure_detectors(root: Path) -> tuple[Path, Path]:
    """ONNX files of model A, which never predicts a failure (high plain accuracy on
    imbalanced data), and model B, which catches most failures at the price of some
    false alarms (its threshold is lower and it listens to a noise feature)."""
    x, y = imbalanced(3, 400)
    never = LogisticRegression().fit(x, y)
    never.coef_ = np.zeros_like(never.coef_)
    never.intercept_ = np.array([-10.0])
    catches = LogisticRegression().fit(x, y)
    catches.coef_ = np.array([[4.0, 0.0, 3.2, 0.0]])
    catches.intercept_ = np.array([-4.0 * 1.2])
    a = from_sklearn(never, x, path=root / "never.onnx")
    b = from_sklearn(catches, x, path=root / "catches.onnx")
    return a, b
