"""Serving parameters of an assignment: the one definition the hub checks when a deployment
or assignment is made and a site checks again, per model, before it loads anything.

A parameter the site cannot use must be refused where it is written (a clear 400 naming the
key) and, should one still arrive, fail only its own model: once an unparsable
``intra_op_threads`` left one model ``loading`` forever and kept every other model on the
site from activating.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelfleet.errors import InvalidInput

__all__ = ["SERVING_PARAMS", "check_serving_params"]

#: key -> (kind, lowest, highest): what each parameter may be.
SERVING_PARAMS: Mapping[str, tuple[type, float, float]] = {
    "max_batch_size": (int, 1, 65536),
    "max_batch_time_ms": (float, 0, 60000),
    "intra_op_threads": (int, 1, 256),
}


def check_serving_params(params: object, where: str = "params") -> dict[str, Any]:
    """``params`` as a plain dict if every key is known and every value in its bounds;
    :class:`InvalidInput` naming the first that is not."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidInput(f"{where} must be an object, got {type(params).__name__}")
    checked: dict[str, Any] = {}
    for key, value in params.items():
        rule = SERVING_PARAMS.get(key) if isinstance(key, str) else None
        if rule is None:
            allowed = ", ".join(sorted(SERVING_PARAMS))
            raise InvalidInput(f"{where}: unknown parameter {str(key)[:64]!r} (known: {allowed})")
        kind, low, high = rule
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (kind is int and not isinstance(value, int)) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise InvalidInput(
                f"{where}.{key} must be {what} in [{low:g}, {high:g}], got {str(value)[:64]!r}"
            )
        checked[key] = value
    return checked
