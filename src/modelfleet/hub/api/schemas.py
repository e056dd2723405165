"""Store records -> the API's wire records (``modelfleet.api``).

The shapes live in :mod:`modelfleet.api` so the SDK can parse them without importing the
hub; building them from the store's records is the hub's business, so it stays here.
"""

from __future__ import annotations

from modelfleet.api import AuditEntry, Model, Token, Version
from modelfleet.hub.store.records import AuditRecord, ModelRecord, TokenRecord, VersionRecord

__all__ = ["audit_entry", "model_of", "token_of", "version_of"]


def version_of(record: VersionRecord, aliases: dict[str, int] | None = None) -> Version:
    names = sorted(a for a, v in (aliases or {}).items() if v == record.version)
    return Version(
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


def model_of(record: ModelRecord) -> Model:
    return Model(
        name=record.name,
        created_at=record.created_at,
        latest_version=record.latest_version,
        version_count=record.version_count,
        aliases=dict(record.aliases),
    )


def token_of(record: TokenRecord) -> Token:
    return Token(
        id=record.id,
        name=record.name,
        role=record.role,
        site=record.site,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        models=list(record.models) if record.models is not None else None,
        site_selector=record.site_selector,
        last_used_at=record.last_used_at,
    )


def audit_entry(record: AuditRecord) -> AuditEntry:
    return AuditEntry(
        id=record.id,
        at=record.at,
        actor=record.actor,
        action=record.action,
        object=record.object,
        outcome=record.outcome,
        detail=record.detail,
    )
