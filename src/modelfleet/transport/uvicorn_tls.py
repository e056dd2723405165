"""uvicorn serving TLS with the peer's identity in the ASGI scope, as the builtin server does.

uvicorn verifies client certificates (``ssl_cert_reqs``, ``ssl_ca_certs``) but does not put
them in the scope, and the ASGI TLS extension is what the hub's authentication needs to
tell a site's certificate from a bearer token. :class:`PeerAwareProtocol` is uvicorn's
httptools protocol with one addition: when a connection is made (after the TLS handshake),
it reads the verified certificate once and wraps that connection's app so every request's
scope carries ``tls`` and ``modelfleet.peer`` (:func:`modelfleet.pki.tls.tls_extensions`).
It relies on uvicorn keeping the connection's app in ``self.app``, which holds for the
versions the project allows (``uvicorn<1``) and is covered by the TLS tests.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelfleet.pki.tls import ServerTlsFiles, tls_extensions
from modelfleet.transport.asgi import ASGIApp, Receive, Scope, Send

__all__ = ["PeerAwareProtocol", "uvicorn_tls_options"]


def _with_extensions(app: ASGIApp, extensions: dict[str, Any]) -> ASGIApp:
    async def connection_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["extensions"] = {**(scope.get("extensions") or {}), **extensions}
        await app(scope, receive, send)

    return connection_app


class PeerAwareProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        extensions = tls_extensions(transport.get_extra_info("ssl_object"))
        if extensions:
            self.app = _with_extensions(self.app, extensions)

    def shutdown(self) -> None:
        """At server stop, an idle connection is aborted rather than closed. Closing a TLS
        connection sends close_notify and waits for the peer's, which a client holding the
        connection idle in its pool sends only when it next looks at it: each such client
        held the stop for the whole graceful timeout. Nothing is lost by aborting: no
        request is in progress and nothing is left to write."""
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if idle and self.transport.get_write_buffer_size() == 0:
            self.transport.abort()
            return
        super().shutdown()


def uvicorn_tls_options(tls: ServerTlsFiles | None) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for ``tls`` (plain HTTP when None)."""
    if tls is None:
        return {"http": "httptools"}
    options: dict[str, Any] = {
        "http": PeerAwareProtocol,
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
    }
    if tls.client_ca_file is not None:
        options["ssl_ca_certs"] = str(tls.client_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    return options
