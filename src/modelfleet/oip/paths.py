"""The Open Inference Protocol's model paths, parsed in one place for the site and gateway.

``/v2/models/{name}[/versions/{version}][/infer|/ready]``: the model's metadata, its
inference or its readiness, optionally of one version. The site's server and the gateway
answer the same grammar, so a path one accepts the other accepts too.

A version that is not a decimal integer (or too long to be one) parses as version ``-1``,
which no model has: the caller answers 404 naming it, rather than 404 "no such endpoint".
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MODELS_PREFIX", "ModelPath", "parse_model_path"]

MODELS_PREFIX = "/v2/models/"
_INFER = "/infer"
_READY = "/ready"


class ModelPath(NamedTuple):
    """A parsed model path; ``action`` is ``""`` (metadata), ``"infer"`` or ``"ready"``."""

    name: str
    version: int | None
    action: str


def parse_model_path(path: str) -> ModelPath | None:
    """``path`` as a model path, or None when it is not one (404 "no such endpoint").

    The action suffix is tried first; ``m/versions/infer`` (no model path with an
    ``/infer`` suffix) still reads as the metadata of version "infer" (-1), while a
    ``/ready`` path must name a model exactly.
    """
    if not path.startswith(MODELS_PREFIX):
        return None
    rest = path[len(MODELS_PREFIX) :]
    if rest.endswith(_INFER):
        target = _target(rest[: -len(_INFER)])
        if target is not None:
            return ModelPath(target[0], target[1], "infer")
    elif rest.endswith(_READY):
        target = _target(rest[: -len(_READY)])
        return None if target is None else ModelPath(target[0], target[1], "ready")
    target = _target(rest)
    return None if target is None else ModelPath(target[0], target[1], "")


def _target(rest: str) -> tuple[str, int | None] | None:
    """``m`` or ``m/versions/v`` -> (name, version)."""
    parts = rest.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions":
        text = parts[2]
        decimal = text.isascii() and text.isdigit() and len(text) < 19  # not "²": int() fails
        return parts[0], int(text) if decimal else -1
    return None
