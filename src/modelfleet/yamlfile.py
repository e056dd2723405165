"""Reading the small YAML files operators write (policies, fleets, jobs, site configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelfleet.errors import InvalidInput


def load_yaml(path: Path, what: str) -> Any:
    """The parsed document (None when empty); ``InvalidInput`` names the file and problem."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{what} {path} is not valid YAML: {exc}") from exc


def load_yaml_file(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    doc = load_yaml(path, what)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} {path} must be a mapping at the top level")
    return doc
