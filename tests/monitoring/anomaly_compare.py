"""Comparing two computations of the same anomalies (the incremental state against the
reference ``detect()``).

Everything is compared exactly except the figures of the output-distribution metrics
(``output_<col>``): they are medians read from merged KLL sketches, and a KLL sketch past a
few hundred values compacts at random, so two merges of the same windows in another order
agree only within the sketch's rank error. Those figures are compared within a tolerance.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

SKETCH_FIGURES = ("observed", "expected", "score", "severity")


def _plain(anomaly: Any) -> dict[str, Any]:
    d = anomaly if isinstance(anomaly, dict) else anomaly.as_dict()
    d = dict(d)
    if isinstance(d.get("expected"), float) and math.isnan(d["expected"]):
        d["expected"] = None
    return d


def _exact_part(d: dict[str, Any]) -> dict[str, Any]:
    sketched = d["metric"].startswith("output_")
    return {k: v for k, v in d.items() if not (sketched and k in SKETCH_FIGURES)}


def assert_same_anomalies(found: list[Any], reference: list[Any]) -> None:
    left, right = [_plain(a) for a in found], [_plain(a) for a in reference]
    exact = [
        {
            k: v
            for k, v in d.items()
            if not (d["metric"].startswith("output_") and k in SKETCH_FIGURES)
        }
        for d in left
    ]
    expected = [
        {
            k: v
            for k, v in d.items()
            if not (d["metric"].startswith("output_") and k in SKETCH_FIGURES)
        }
        for d in right
    ]
    assert exact == expected
    for a, b in zip(left, right, strict=True):
        if a["metric"].startswith("output_"):
            assert a["observed"] == pytest.approx(b["observed"], rel=0.25, abs=0.05)
            assert a["expected"] == pytest.approx(b["expected"], rel=0.25, abs=0.05)
