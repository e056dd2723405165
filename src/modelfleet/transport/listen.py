"""The listening socket of a server command, and the ready file that reports it.

``hub serve``, ``site serve`` and ``gateway serve`` bind their socket themselves before they
serve it, so that:

- ``--port 0`` works: the kernel picks a free port, and nothing has to guess one first
  (finding a free port by binding and releasing it lets another process take it in between);
- ``--ready-file PATH`` tells whoever started the command which process holds which port:
  once the socket listens, the command writes ``{"pid": ..., "port": ...}`` to PATH
  (atomically, through a temporary file renamed into place). A launcher that waits for this
  file knows that an answer on that port comes from the process it started, not from some
  other process that happened to be listening there (:mod:`modelfleet.sim.launcher`).

The socket is bound with ``SO_REUSEADDR``, as uvicorn and asyncio bind theirs: a restarted
server can listen again while connections of its predecessor linger in ``TIME_WAIT``, and a
launcher may hold the port reserved (bound, not listening) across restarts.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from modelfleet.errors import InvalidInput

__all__ = ["BACKLOG", "ReadyReport", "bind", "bound_port", "read_ready_file", "report_ready"]

#: Pending connections the kernel queues before the server accepts them.
BACKLOG = 2048


@dataclass(frozen=True)
class ReadyReport:
    """What a server wrote to its ready file: who it is and which port it listens on."""

    pid: int
    port: int


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0: any free port), not yet listening.

    Connections are refused until :func:`report_ready` makes it listen, so nobody reaches
    the server before it is ready to accept. A port in use raises :class:`InvalidInput`.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def bound_port(sock: socket.socket) -> int:
    """The port ``sock`` is bound to (the one the kernel chose for port 0)."""
    port: int = sock.getsockname()[1]
    return port


def report_ready(sock: socket.socket, ready_file: Path | None) -> None:
    """Start listening on ``sock``, then write ``ready_file`` (if any) with pid and port."""
    sock.listen(BACKLOG)
    if ready_file is None:
        return
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    partial = ready_file.with_name(ready_file.name + ".tmp")
    partial.write_text(json.dumps({"pid": os.getpid(), "port": bound_port(sock)}))
    os.replace(partial, ready_file)


def read_ready_file(path: Path) -> ReadyReport | None:
    """The report in ``path``, or None while it is not (completely) written."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    pid, port = doc.get("pid"), doc.get("port")
    if not isinstance(pid, int) or not isinstance(port, int):
        return None
    return ReadyReport(pid=pid, port=port)
