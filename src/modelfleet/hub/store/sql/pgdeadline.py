"""The psycopg side of :mod:`.deadlines` (imported only when psycopg is installed)."""

from __future__ import annotations

from typing import Any

import psycopg

from modelfleet.hub.store.sql.deadlines import WATCHDOG, current_limit


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every operation has a deadline (``deadline_s``).

    ``Connection.wait`` is psycopg 3's one funnel for the I/O of an open connection
    (statements, fetches, commit, rollback); connecting has libpq's ``connect_timeout``."""

    deadline_s: float | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        limit = current_limit(self.deadline_s)
        if limit is None:
            return super().wait(gen, *args, **kwargs)
        token = WATCHDOG.arm(lambda: self.pgconn.socket, limit)
        fired = False
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.Error as exc:
            fired = WATCHDOG.disarm(token)
            if fired:
                raise psycopg.OperationalError(
                    f"no answer from the database within {limit:g} s (a network partition?);"
                    " the connection was cut"
                ) from exc
            raise
        finally:
            if not fired:
                WATCHDOG.disarm(token)
