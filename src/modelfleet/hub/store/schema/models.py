"""Tables of the registry: models, their immutable numbered versions, movable aliases."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

models = Table(
    "models",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("name", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("name"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("io", JSON, nullable=False),
    Column("opset", Integer, nullable=False),
    Column("framework", String(NAME_LEN), nullable=True),
    Column("description", Text, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("training_regions", JSON, nullable=False),
    Column("parent_version", Integer, nullable=True),
    Column("pushed_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("signature", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("model_id", "version"),
    Index(None, "digest"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("alias", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("model_id", "alias"),
    # An alias can only ever point at a version that exists.
    ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.version"]),
)
