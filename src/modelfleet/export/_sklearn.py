"""scikit-learn to ONNX through skl2onnx, shaped for what a site serves.

Sites serve tensors over the Open Inference Protocol, so every choice here aims at a graph whose
inputs and outputs are plain tensors: one FP32 input ``X`` of shape ``[batch, n_features]``
with a dynamic batch (the name federated models and the README's ``client.infer(name, {"X": rows})``
use too), and for classifiers a ``label`` tensor plus a ``probabilities`` FP32
tensor instead of skl2onnx's default ZipMap (a sequence of maps that OIP cannot carry).

FP32 rather than FP64 input: scikit-learn's trees already compare in float32, so tree ensembles
match exactly, and every skl2onnx converter supports float while many lack double. Linear models
then differ from scikit-learn's float64 arithmetic only by float32 rounding (about 1e-6 relative).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.errors import InvalidInput, MissingDependency
from modelfleet.export._artifact import save, summarize

INPUT_NAME = "X"
_NUMERIC_KINDS = frozenset("biuf")
# How deep to look for nested estimators (Pipeline in a ColumnTransformer in a Voting...).
_MAX_NESTING = 8


def from_sklearn(
    model: Any,
    sample_X: Any,  # noqa: N803 - scikit-learn's own spelling for a feature matrix
    *,
    path: str | Path | None = None,
    name: str | None = None,
    target_opset: int | None = None,
) -> Path:
    """Convert a fitted scikit-learn estimator or Pipeline to a checked ONNX file.

    ``sample_X`` only fixes the number of features and proves the data is numeric; its rows are
    not used. The file goes to ``path`` or to a fresh temporary file, and its path is returned.

    Raises :class:`~modelfleet.errors.InvalidInput` for an unfitted or unsupported estimator or
    non-numeric / non-2-D sample data, and :class:`MissingDependency` without the ``sklearn``
    extra.
    """
    try:
        from skl2onnx import convert_sklearn, get_model_alias
        from skl2onnx.common.data_types import FloatTensorType
        from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
        from sklearn.base import BaseEstimator, is_classifier
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError as exc:
        raise MissingDependency(
            "exporting scikit-learn models needs scikit-learn and skl2onnx: "
            "pip install 'modelfleet[sklearn]'"
        ) from exc

    estimator_name = type(model).__name__
    if not isinstance(model, BaseEstimator):
        raise InvalidInput(f"{estimator_name} is not a scikit-learn estimator")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise InvalidInput(
            f"{estimator_name} is not fitted; call fit() before exporting it"
        ) from exc

    n_features = _feature_count(sample_X)
    expected = getattr(model, "n_features_in_", None)
    if isinstance(expected, int) and expected != n_features:
        raise InvalidInput(
            f"sample_X has {n_features} features but {estimator_name} was fitted on {expected}"
        )

    estimators = list(_walk(model))
    # Keyed by class, not id(): skl2onnx converts the fitted copies some meta-estimators keep
    # (VotingClassifier.estimators_, ColumnTransformer.transformers_), which have other ids.
    # A Pipeline's outputs are its final step's, so the option goes on that step's class.
    options: dict[Any, dict[str, Any]] = {
        type(est): {"zipmap": False}
        for est in estimators
        if is_classifier(est) and not hasattr(est, "steps")
    }
    graph_name = name or estimator_name
    try:
        proto = convert_sklearn(
            model,
            name=graph_name,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=target_opset,
            options=options or None,
        )
    except (MissingConverter, MissingShapeCalculator) as exc:
        unknown = {type(e).__name__ for e in estimators if not _has_alias(get_model_alias, e)}
        missing = sorted(unknown) or [estimator_name]
        raise InvalidInput(
            f"skl2onnx has no ONNX converter for {', '.join(missing)}"
            + ("" if missing == [estimator_name] else f" (inside {estimator_name})")
        ) from exc
    except Exception as exc:
        # skl2onnx surfaces converter limits as RuntimeError, NotImplementedError, ValueError,
        # TypeError or NameError depending on the estimator; all mean "cannot convert this".
        raise InvalidInput(
            f"skl2onnx could not convert {estimator_name}: {summarize(exc)}"
        ) from exc

    serialized = proto.SerializeToString()

    def write(scratch: Path) -> None:
        scratch.write_bytes(serialized)

    return save(path, graph_name, write)


def _feature_count(sample_X: Any) -> int:  # noqa: N803
    """Width of the sample, after proving it is a numeric 2-D table."""
    if _is_dataframe(sample_X):
        non_numeric = [
            f"{col!s} ({dtype})"
            for col, dtype in sample_X.dtypes.items()
            if getattr(dtype, "kind", "O") not in _NUMERIC_KINDS
        ]
        if non_numeric:
            raise InvalidInput(
                "only numeric columns can be exported; non-numeric: "
                + ", ".join(non_numeric)
                + ". Encode them in the Pipeline's input or drop them."
            )
        shape = tuple(sample_X.shape)
    else:
        try:
            array = np.asarray(sample_X)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"sample_X is not array-like: {exc}") from exc
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidInput(
                f"sample_X has dtype {array.dtype}; only numeric data (float, int, bool) "
                "can be exported"
            )
        shape = array.shape
    if len(shape) != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if len(shape) == 1 else ""
        raise InvalidInput(f"sample_X must be 2-D (rows x features), got shape {shape}{hint}")
    if shape[1] == 0:
        raise InvalidInput("sample_X has no feature columns")
    return int(shape[1])


def _has_alias(get_model_alias: Any, estimator: Any) -> bool:
    """Whether skl2onnx knows a converter for this estimator's class (custom ones included)."""
    try:
        get_model_alias(type(estimator))
    except RuntimeError:
        return False
    return True


def _is_dataframe(obj: Any) -> bool:
    """Duck-typed so pandas stays an optional dependency the SDK never imports."""
    return hasattr(obj, "dtypes") and hasattr(obj, "columns") and hasattr(obj, "shape")


def _walk(model: Any, depth: int = 0) -> Iterator[Any]:
    """Yield ``model`` and every estimator nested in it, fitted copies included."""
    from sklearn.base import BaseEstimator

    yield model
    if depth >= _MAX_NESTING:
        return
    stack: list[Any] = list(vars(model).values())
    while stack:
        value = stack.pop()
        if isinstance(value, BaseEstimator):
            yield from _walk(value, depth + 1)
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
