"""Tables of access control: bearer tokens (hashes only) and the append-only audit log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32)),
    Column("name", String(NAME_LEN), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("site", String(NAME_LEN), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    # An infer token's scope: model names (NULL: all) and a site label selector (NULL: all).
    Column("models", JSON, nullable=True),
    Column("site_selector", String(512), nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("token_hash"),
)

audit = Table(
    "audit",
    metadata,
    # SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(NAME_LEN), nullable=False),
    Column("action", String(NAME_LEN), nullable=False),
    Column("object", Text, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    Index(None, "at"),
)
