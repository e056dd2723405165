"""Tokens and the audit log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from modelfleet.api._base import Record

__all__ = ["AuditEntry", "Token", "TokenCreated", "TokenIn"]


#: How a TTL is spelled on the wire: a duration text or a number of seconds.
TTL_DESCRIPTION = (
    "Lifetime: a duration such as 90m, 12h, 30d, 2w, or a number of seconds. Omitted: the "
    "hub's default for the role; longer than the hub's maximum: 400."
)


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    ttl: str | float | None = Field(default=None, description=TTL_DESCRIPTION)
    models: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Role infer only: the models the token may call (null: every model).",
    )
    site_selector: str | None = Field(
        default=None,
        max_length=500,
        description="Role infer only: the sites it may call, as a label selector (null: all).",
    )


class Token(Record):
    """A token as listed: never its secret. A revoked token stays listed (``revoked_at``)."""

    id: str
    name: str
    role: str
    site: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None = Field(
        default=None, description="An infer token's models (null: every model)."
    )
    site_selector: str | None = Field(
        default=None, description="An infer token's sites, as a label selector (null: all)."
    )
    last_used_at: datetime | None = None


class TokenCreated(Token):
    token: str = Field(description="The secret. Shown once; only its hash is stored.")


class AuditEntry(Record):
    id: int
    at: datetime
    actor: str
    action: str
    object: str
    outcome: str
    detail: str
