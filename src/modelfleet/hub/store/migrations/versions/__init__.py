"""Alembic revisions, one file per schema change, numbered 0001, 0002, ..."""
