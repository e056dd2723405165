"""The registry's records: models, versions, aliases, the signing key, reference profiles
and drift thresholds."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from modelfleet.api._base import Free, Record

__all__ = [
    "AliasIn",
    "DriftThresholds",
    "Model",
    "ModelDetail",
    "ReferenceProfile",
    "SigningKey",
    "Version",
]


class Version(Record):
    """One pushed version: its signed manifest, the facts in it and the aliases naming it."""

    model: str
    version: int
    digest: str
    size: int
    io: Free
    opset: int
    framework: str | None
    description: str
    metrics: dict[str, float]
    tags: dict[str, str]
    training_regions: list[str]
    parent_version: int | None
    pushed_by: str
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)
    manifest: str = Field(description="Canonical JSON, exactly the signed bytes.")
    signature: str = Field(description="Base64 Ed25519 signature of `manifest`.")


class Model(Record):
    name: str
    created_at: datetime
    latest_version: int
    version_count: int
    aliases: dict[str, int]


class ModelDetail(Model):
    versions: list[Version]


class AliasIn(BaseModel):
    version: int = Field(ge=1)


class SigningKey(Record):
    algorithm: str = "ed25519"
    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 public key.")
    key_id: str


class ReferenceColumn(Record):
    kind: str
    count: int
    missing: int


class ReferenceProfile(Record):
    """A version's reference profile: a summary per column, plus the profile itself."""

    model: str
    version: int
    columns: dict[str, ReferenceColumn]
    labels: Free | None = None
    profile: Free


class DriftThresholds(Record):
    """The thresholds in force for a model (the hub's defaults merged with overrides)."""

    model: str
    thresholds: dict[str, float]
