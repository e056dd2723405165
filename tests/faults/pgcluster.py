"""A private PostgreSQL cluster a fault test may stop, restart and kill sessions of.

The shared server (``MODELFLEET_TEST_POSTGRES_URL``) serves tests running in parallel, so a
test about the database's own faults brings its own: ``initdb`` once per module into a
directory the ``postgres`` user owns (initdb refuses root), on a free loopback port, its
unix socket beside the data. ``fsync=off``: the cluster is thrown away, and the faults under
test are the server's restart and its sessions' ends, not a power cut.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PrivatePostgres", "postgres_bin_dir"]


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None without a PostgreSQL server."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivatePostgres:
    """One throw-away cluster: :meth:`start`, :meth:`stop`, :meth:`destroy`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="mf-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, in-flight transactions rolled back."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return list(cur.fetchall()) if cur.description else []

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
