"""A webhook target for tests: a threaded ``http.server`` on loopback that records every
request (path, lower-cased headers, raw body) and answers a status the test can change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """A webhook target: records every request; answers ``status`` (after ``hang_s``, or
    when the test ends, whichever is first: a target that does not answer)."""

    status: int = 200
    hang_s: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    got: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def ids(self, path: str = "/hook") -> list[int]:
        with self.lock:
            return [
                int(r["headers"]["x-modelfleet-event-id"]) for r in self.got if r["path"] == path
            ]


@contextmanager
def receiver(status: int = 200, hang_s: float = 0.0) -> Iterator[Receiver]:
    rec = Receiver(status=status, hang_s=hang_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with rec.lock:
                rec.got.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
            if rec.hang_s:
                rec.released.wait(rec.hang_s)
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass  # http.server logs every request to stderr; the test reads `rec` instead

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.released.set()
        server.shutdown()
        server.server_close()
