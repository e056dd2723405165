"""Plain records the store hands out: immutable, detached from any database session."""

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


@dataclass(frozen=True)
class TokenRecord:
    """A bearer token as stored: only its hash is kept, never the secret."""

    id: str
    name: str
    role: str  # admin | operator | viewer | site
    site: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        """True when the token is neither revoked nor expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log: who did what to which object, and how it ended."""

    id: int
    at: datetime
    actor: str
    action: str
    object: str
    outcome: str  # "ok" or an error code such as "forbidden"
    detail: str


@dataclass(frozen=True)
class SiteRecord:
    """A registered site; the enrollment secret's hash stays in the store, never here."""

    name: str
    labels: dict[str, str]
    created_at: datetime
    enrolled_at: datetime | None  # the last successful enrollment, None until the first
    enrollment_expires_at: datetime | None
    last_seen: datetime | None  # when the agent last reported
    report: dict[str, Any]  # the agent's last report verbatim; {} before any
    revision: int  # desired-state revision: the agent's long-poll ETag, starts at 1


@dataclass(frozen=True)
class Assignment:
    """One model version a site should be serving, as part of its desired state."""

    site: str
    model: str
    version: int
    ref: str  # what the operator asked for, e.g. "pump@production", kept for display
    params: dict[str, Any]  # serving settings such as batching, passed to the agent as-is
    digest: str  # the version's blob, so the agent can fetch and verify it
    assigned_at: datetime
