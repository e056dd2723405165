"""Export helpers that turn a trained model into the ONNX artifact modelfleet deploys.

They run on the user's machine, never on the hub or a site: sites only ever load ONNX, so the
framework-specific work (and the frameworks themselves) stay where the model was trained.
scikit-learn and PyTorch are optional extras, imported only when their helper is called, so
``import modelfleet`` works without either.
"""

from __future__ import annotations

from modelfleet.errors import MissingDependency
from modelfleet.export._sklearn import from_sklearn
from modelfleet.export._torch import from_torch

__all__ = ["MissingDependency", "from_sklearn", "from_torch"]
