"""What the SQL-backed stores share: the engine, transactions, error translation, migrations.

The repositories (``models``, ``access``, ``sites``, ``deployments``, ``telemetry``,
``federation`` beside this module) hold the Core queries and are the same for every
backend; :class:`SqlStore` builds them all, once, on its engine. A backend subclass only
supplies the engine and the few statements whose locking differs (creating a model row
under concurrency, guarding migrations), so the contract suite exercises one body of
query code on both databases.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from modelfleet.errors import Conflict, InvalidInput, StoreError
from modelfleet.hub.store.base import Leadership, Store
from modelfleet.hub.store.sql.access import SqlAuditRepo, SqlTokenRepo
from modelfleet.hub.store.sql.accuracy import SqlAccuracyRepo
from modelfleet.hub.store.sql.assignments import SqlAssignmentRepo
from modelfleet.hub.store.sql.deadlines import DbDeadlines, bounded
from modelfleet.hub.store.sql.deployments import SqlDeploymentRepo
from modelfleet.hub.store.sql.evaluations import SqlEvaluationRepo
from modelfleet.hub.store.sql.events import SqlEventRepo
from modelfleet.hub.store.sql.federation import SqlFederationRepo
from modelfleet.hub.store.sql.leadership import SqlLeadership
from modelfleet.hub.store.sql.models import SqlModelRepo
from modelfleet.hub.store.sql.pipelines import SqlPipelineRepo
from modelfleet.hub.store.sql.schedules import SqlScheduleRepo
from modelfleet.hub.store.sql.sites import SqlSiteRepo
from modelfleet.hub.store.sql.telemetry import SqlTelemetryRepo

#: The Alembic revisions, packaged beside the store (``hub/store/migrations``).
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: Execution option marking a connection whose transaction will write; SQLite uses it to
#: take the write lock at BEGIN instead of failing to upgrade a read lock mid-transaction.
WRITE_OPTION = "modelfleet_write"


def head_revision() -> str | None:
    """The newest Alembic revision this code knows (what ``migrate()`` upgrades to)."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head: str | None = ScriptDirectory.from_config(config).get_current_head()
    return head


def utcnow() -> datetime:
    """The current instant as the store records it (aware UTC, microsecond precision)."""
    return datetime.now(UTC)


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy failures into modelfleet errors so callers catch only ours."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"conflicts with existing state: {_first_line(exc.orig)}") from exc
    except DataError as exc:
        # A value the column cannot hold (PostgreSQL: integer out of range, text too
        # long): the caller's input, so a 400 naming it, never a 500.
        raise InvalidInput(f"a value is out of range: {_first_line(exc.orig)}") from exc
    except OverflowError as exc:
        # SQLite's driver refuses an int beyond 64 bits before the database sees it.
        raise InvalidInput(f"a number is out of range: {exc}") from exc
    except DBAPIError as exc:
        raise StoreError(f"database error: {_first_line(exc.orig)}") from exc
    except PoolTimeout as exc:
        raise StoreError("database connection pool exhausted") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {_first_line(exc)}") from exc


def alembic_config(connection: Connection | None = None) -> Config:
    """A file-less Alembic config pointing at the packaged revisions."""
    config = Config()
    # ConfigParser interpolates '%', which may appear in an install path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class SqlStore(Store):
    """A :class:`Store` over a SQLAlchemy engine; subclasses bring the engine and locking."""

    #: Bounds on the connections (PostgreSQL applies them; SQLite is a local file).
    deadlines = DbDeadlines()
    #: The ``options`` of the database URL: server settings the operator chose.
    operator_options = ""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.models = SqlModelRepo(self)
        self._tokens = SqlTokenRepo(self)
        self.tokens = self._tokens
        self.audit = SqlAuditRepo(self)
        self.sites = SqlSiteRepo(self)
        self.assignments = SqlAssignmentRepo(self)
        self.deployments = SqlDeploymentRepo(self)
        self.telemetry = SqlTelemetryRepo(self)
        self.federation = SqlFederationRepo(self)
        self.events = SqlEventRepo(self)
        self.evaluations = SqlEvaluationRepo(self)
        self.accuracy = SqlAccuracyRepo(self)
        self.schedules = SqlScheduleRepo(self)
        self.pipelines = SqlPipelineRepo(self)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._tokens.close()  # its last-use writes need the engine
        self._engine.dispose()

    def now(self) -> datetime:
        return utcnow()

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(select(1))

    def forget_token_lookups(self) -> None:
        """Tokens changed in a transaction of another repository (enrollment): lookups
        remembered by this process must not outlive it."""
        self._tokens.forget_lookups()

    def leadership(self, role: str) -> Leadership:
        return SqlLeadership(self, role)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction for queries only: several reads see one consistent snapshot."""
        with translate_errors(), self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that writes; committed on success, rolled back on any exception."""
        with translate_errors(), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision``; safe to call from several processes at once."""
        try:
            # No deadline: a migration may wait for a peer's to finish, and rewrite tables.
            with bounded(None), self.write() as conn:
                self.lock_migrations(conn)
                command.upgrade(alembic_config(conn), revision)
        except CommandError as exc:
            raise StoreError(
                f"cannot migrate {self.url} to {revision}: {exc}"
                " (is the database newer than this modelfleet?)"
            ) from exc

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at, or None before the first migration."""
        from alembic.runtime.migration import MigrationContext

        with self.read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def lock_migrations(self, conn: Connection) -> None:
        """Serialise concurrent migrators inside ``conn``'s transaction (default: no-op).

        SQLite needs nothing more: its write transaction already excludes other writers.
        """

    @abstractmethod
    def insert_model_if_absent(self, conn: Connection, name: str, now: datetime) -> None:
        """Create the model row unless it exists, without failing when another
        transaction creates it concurrently."""
