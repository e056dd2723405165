"""The SQL implementation of the store: SQLAlchemy Core queries shared by both backends.

``store`` holds :class:`~.store.SqlStore` (engine, transactions, error translation,
migrations, and every repository built on them); ``sqlite`` and ``postgres`` the two
backends; one module per domain holds that domain's queries; ``leadership`` the leader
election on the same database.
"""
