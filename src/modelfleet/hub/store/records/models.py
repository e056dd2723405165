"""Records of the registry: models, their numbered versions and what a push brings.

Like every record the store hands out, immutable and detached from any database session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class NewVersion:
    """Everything the caller knows about a version before the store numbers it."""

    model: str
    digest: str  # lowercase hex sha256 of the ONNX bytes
    size: int
    io: dict[str, Any]  # {"inputs": [...], "outputs": [...]} as read from the graph
    opset: int
    framework: str | None
    description: str
    metrics: dict[str, float]
    tags: dict[str, str]
    training_regions: tuple[str, ...]
    parent_version: int | None
    pushed_by: str


@dataclass(frozen=True)
class VersionRecord:
    """One immutable, numbered, signed version of a model."""

    model: str
    version: int
    digest: str
    size: int
    io: dict[str, Any]
    opset: int
    framework: str | None
    description: str
    metrics: dict[str, float]
    tags: dict[str, str]
    training_regions: tuple[str, ...]
    parent_version: int | None
    pushed_by: str
    created_at: datetime
    manifest: str  # canonical JSON text, exactly the bytes that were signed
    signature: str  # base64 Ed25519 signature over ``manifest``


@dataclass(frozen=True)
class ModelRecord:
    """A named model: its versions are numbered 1, 2, 3, ... and aliases point at them."""

    name: str
    created_at: datetime
    latest_version: int
    version_count: int
    aliases: dict[str, int] = field(default_factory=dict)
