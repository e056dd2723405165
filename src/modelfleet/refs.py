"""Names and model references: ``name``, ``name:3``, ``name@alias``.

Names start with a letter or digit and hold letters, digits, ``.``, ``_`` and ``-``
(at most 64 characters), so they are safe in URLs, file names and label values. Aliases
follow the same rule but may not be all digits, so ``name:3`` and ``name@3`` never mean
two different things.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelfleet.errors import InvalidName

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(value: str, what: str = "name") -> str:
    if not _NAME.fullmatch(value):
        raise InvalidName(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_alias(value: str) -> str:
    check_name(value, "alias")
    if value.isdigit():
        raise InvalidName(f"invalid alias {value!r}: an alias may not be a number")
    return value


@dataclass(frozen=True)
class ModelRef:
    """A reference to one version: by number, by alias, or the latest when neither."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> ModelRef:
    """Parse ``name``, ``name:V`` or ``name@alias``; ``InvalidName`` on anything else."""
    if "@" in text:
        name, _, alias = text.partition("@")
        return ModelRef(check_name(name, "model name"), alias=check_alias(alias))
    if ":" in text:
        name, _, version = text.partition(":")
        if not version.isdigit() or int(version) < 1:
            raise InvalidName(f"invalid version in {text!r}: expected a positive number")
        return ModelRef(check_name(name, "model name"), version=int(version))
    return ModelRef(check_name(text, "model name"))
