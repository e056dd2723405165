"""Train the CI pipelines' model: machine failures from four sensor readings.

What a pipeline runs before ``modelfleet model push``: it fits a scikit-learn model on data
generated here (a real project reads its own), measures it on a held-out split and writes,
into ``--out-dir``:

- ``model.onnx`` — the model exported with :func:`modelfleet.export.from_sklearn` (the only
  format a site loads; the export runs here, never on the hub or a site);
- ``reference.csv`` — the training features with a header, for ``--reference-data``: the
  push computes their sketches locally and stores them as the drift reference (no row is
  uploaded);
- ``metrics.json`` — the held-out figures, for ``--metrics``.

Usage: ``python train.py --out-dir build [--rows 4000] [--seed 7]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelfleet.export import from_sklearn

FEATURES = ("temperature", "vibration", "pressure", "rpm")


def machine_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sensor readings and whether the machine failed soon after (about 1 in 5 did)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[70.0, 0.3, 5.0, 1500.0], scale=[8.0, 0.1, 1.0, 200.0], size=(rows, 4))
    risk = 0.15 * (x[:, 0] - 70) + 12 * (x[:, 1] - 0.3) - 0.004 * (x[:, 3] - 1500)
    failed = (risk + rng.normal(scale=1.0, size=rows)) > 1.0
    return x.astype(np.float32), failed.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("build"))
    parser.add_argument("--rows", type=int, default=4000, help="200 to 1,000,000")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 200 <= args.rows <= 1_000_000:
        parser.error("--rows must be 200 to 1,000,000")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    x, y = machine_data(args.rows, args.seed)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "f1": round(float(f1_score(y_test, predicted)), 4),
        "train_rows": len(x_train),
    }

    onnx_path = from_sklearn(model, x_train, path=args.out_dir / "model.onnx", name="machine-health")
    np.savetxt(
        args.out_dir / "reference.csv",
        x_train,
        delimiter=",",
        header=",".join(FEATURES),
        comments="",
        fmt="%.6f",
    )
    (args.out_dir / "metrics.json").write_text(json.dumps(metrics) + "\n")
    print(f"trained: {metrics}; exported {onnx_path}")


if __name__ == "__main__":
    main()
