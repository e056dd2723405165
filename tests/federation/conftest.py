"""Shared pieces of the federation tests: site data files and site configs on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    rows = np.column_stack([x, y.astype(np.float64)])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def write_site_config(
    root: Path,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    participate: bool = True,
    reason: str = "",
    trainers: dict[str, str] | None = None,
    **federation: object,
) -> Path:
    data = write_csv(root / f"{name}.csv", x, y)
    config: dict[str, object] = {
        "datasets": {"digits": {"path": str(data), "label": "label", "eval_fraction": 0.2}},
        "federation": {"participate": participate, "reason": reason, **federation},
    }
    if trainers:
        config["trainers"] = trainers
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
