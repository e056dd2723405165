"""Wire shapes of the hub API (documented in the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from modelfleet.hub.store.records import AuditRecord, ModelRecord, TokenRecord, VersionRecord


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class VersionOut(BaseModel):
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
    training_regions: list[str]
    parent_version: int | None
    pushed_by: str
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)
    manifest: str = Field(description="Canonical JSON, exactly the signed bytes.")
    signature: str = Field(description="Base64 Ed25519 signature of `manifest`.")

    @classmethod
    def of(cls, record: VersionRecord, aliases: dict[str, int] | None = None) -> VersionOut:
        names = sorted(a for a, v in (aliases or {}).items() if v == record.version)
        return cls(
            model=record.model,
            version=record.version,
            digest=record.digest,
            size=record.size,
            io=record.io,
            opset=record.opset,
            framework=record.framework,
            description=record.description,
            metrics=record.metrics,
            tags=record.tags,
            training_regions=list(record.training_regions),
            parent_version=record.parent_version,
            pushed_by=record.pushed_by,
            created_at=record.created_at,
            aliases=names,
            manifest=record.manifest,
            signature=record.signature,
        )


class ModelOut(BaseModel):
    name: str
    created_at: datetime
    latest_version: int
    version_count: int
    aliases: dict[str, int]

    @classmethod
    def of(cls, record: ModelRecord) -> ModelOut:
        return cls(
            name=record.name,
            created_at=record.created_at,
            latest_version=record.latest_version,
            version_count=record.version_count,
            aliases=dict(record.aliases),
        )


class ModelDetailOut(ModelOut):
    versions: list[VersionOut]


class AliasIn(BaseModel):
    version: int = Field(ge=1)


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    expires_in_days: float | None = Field(default=None, gt=0)


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    site: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, record: TokenRecord) -> TokenOut:
        return cls(
            id=record.id,
            name=record.name,
            role=record.role,
            site=record.site,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
        )


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret. Shown once; only its hash is stored.")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object: str
    outcome: str
    detail: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditOut:
        return cls(
            id=record.id,
            at=record.at,
            actor=record.actor,
            action=record.action,
            object=record.object,
            outcome=record.outcome,
            detail=record.detail,
        )


class SigningKeyOut(BaseModel):
    algorithm: str = "ed25519"
    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 public key.")
    key_id: str
