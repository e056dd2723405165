"""Alembic migrations for the hub's state store, shipped inside the package.

The hub upgrades its own database on start (see :meth:`SqlStore.migrate`), so the revisions
must travel with the code rather than live next to an ``alembic.ini``.
"""
