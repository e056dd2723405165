"""A TCP proxy on loopback for tests: records what clients send, cuts links, cuts downloads."""

from __future__ import annotations

import contextlib
import re
import socket
import threading

_REQUEST_HEAD = re.compile(rb"(?:GET|POST|PUT|DELETE|HEAD) [^\r\n]* HTTP/1\.1\r\n.*?\r\n\r\n", re.S)


class RecordingProxy:
    """A TCP proxy on loopback that records every byte the client sends and can cut the
    link (refusing and resetting connections) to simulate an outage, or cut one response
    part-way (:meth:`cut_response`) to interrupt a download."""

    def __init__(self, target_port: int, *, tls: bool = False) -> None:
        """``tls``: the target speaks HTTPS (bytes are relayed untouched; :attr:`url` says
        ``https``, and what is recorded is then ciphertext)."""
        self.target_port = target_port
        self.tls = tls
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._cut_marker: bytes | None = None
        self._cut_after = 0
        #: Set once a response was cut by :meth:`cut_response`.
        self.response_cut = threading.Event()
        # Port 0, read back: the kernel's free port is ours from the start.
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def requests_with(self, marker: bytes) -> list[bytes]:
        """The heads of the requests sent so far whose head contains ``marker``."""
        with self._lock:
            data = bytes(self.sent)
        return [head for head in _REQUEST_HEAD.findall(data) if marker in head]

    def cut_response(self, marker: bytes, after_bytes: int) -> None:
        """The next request whose head contains ``marker`` gets only ``after_bytes`` bytes of
        its response (status line and headers included), then its connection is closed."""
        with self._lock:
            self._cut_marker = marker
            self._cut_after = after_bytes

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            armed: list[int] = []  # bytes of the response still let through, when cutting
            threading.Thread(
                target=self._pump, args=(client, upstream, True, armed), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, False, armed), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool, armed: list[int]) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                        if self._cut_marker is not None and self._cut_marker in data:
                            armed.append(self._cut_after)
                            self._cut_marker = None
                elif armed:
                    if len(data) >= armed[0]:
                        dst.sendall(data[: armed[0]])
                        armed.clear()
                        self.response_cut.set()
                        break
                    armed[0] -= len(data)
                dst.sendall(data)
        except OSError:
            pass  # either side closed: the relay ends
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._down.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._server.close()
