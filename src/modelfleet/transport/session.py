"""One HTTP session to the hub, behind every caller of the hub's API.

The SDK and CLI (:class:`~modelfleet.hub_client.HubClient`), the site agent (desired-state
long-polls, blob downloads, reports, telemetry batches, federated tasks) and the routing
directory all talk to the hub through :class:`HubSession`, so three things exist once:

- **the connection**: one ``httpx.Client`` (one pool, thread-safe) per session; a site agent
  builds one session at start-up and shares it between its threads, instead of one pool per
  component. :meth:`HubSession._build` is the only place a hub connection is configured:
  TLS verification against the fleet CA and the site's client certificate go there, and
  every caller gets them.
- **the credential**: the bearer token, sent with every request.
- **the error mapping**: below HTTP (refused, reset, timeout) is :class:`HubUnreachable`,
  which callers treat as "retry later, keep running on what you have"; a hub error body
  ``{"error": {"code", "message"}}`` becomes the matching :class:`ModelfleetError` subclass
  (:func:`raise_for_response`), so a refusal reads the same wherever it surfaces.

Every request is one DEBUG line on ``modelfleet.transport.session`` (method, path, status,
milliseconds): the traffic a site exchanges with its hub, seen with ``--log-level debug``
and kept out of INFO, which says what changed.

Timeouts are the session's default unless a request passes its own: a long-poll that may
legitimately be held for ``wait`` seconds passes :func:`poll_timeout`, so only its read
waits long while connecting still fails fast.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from modelfleet.errors import (
    DigestMismatch,
    HubResponseError,
    HubUnreachable,
    InvalidInput,
    TlsError,
    error_class_for,
)
from modelfleet.pki.identity import hub_identity
from modelfleet.pki.tls import TlsFiles, client_context, peer_identity

__all__ = [
    "POLL_MARGIN_S",
    "HubSession",
    "Timeout",
    "TlsFiles",
    "poll_timeout",
    "raise_for_response",
    "transport_error",
]

log = logging.getLogger(__name__)

#: A request's timeouts: seconds for every phase, or an ``httpx.Timeout`` per phase.
Timeout = float | httpx.Timeout
#: How much longer than its ``wait`` a long-poll's read may take (the hub answers at the
#: end of the wait; the margin covers a busy hub and the network).
POLL_MARGIN_S = 15.0
_CHUNK = 1 << 20
#: Query parameters as httpx takes them (a mapping, or pairs for repeated keys).
Params = Mapping[str, Any] | list[tuple[str, Any]]


def poll_timeout(wait_s: float, *, connect_s: float) -> httpx.Timeout:
    """Timeouts for a request the hub may hold up to ``wait_s`` before answering."""
    return httpx.Timeout(connect_s, read=wait_s + POLL_MARGIN_S)


def transport_error(url: str, exc: httpx.TransportError, doing: str = "") -> Exception:
    """What a failure below HTTP means to the caller.

    A certificate that does not verify, or a plain-HTTP client at a TLS port (or the
    reverse), will fail the same way on every retry: :class:`TlsError`, naming the fix.
    Anything else (refused, reset, timeout) is :class:`HubUnreachable`: retry later.
    """
    text = str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TlsError(
                f"the hub at {url} presented a certificate that does not verify against "
                f"the fleet CA ({cause.verify_message or cause}); set MODELFLEET_CA_FILE to "
                "the fleet's ca.pem (printed by `modelfleet hub init`)"
            )
        if isinstance(cause, ssl.SSLError):
            hint = (
                "it does not speak TLS: use http:// only for a hub started with --insecure-http"
                if "WRONG_VERSION_NUMBER" in str(cause) or "record layer" in str(cause)
                else str(cause)
            )
            return TlsError(f"TLS with the hub at {url} failed: {hint}")
        cause = cause.__cause__ or cause.__context__
    no_http_answer = "without sending a response" in text or "illegal status line" in text
    if url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError) and no_http_answer:
        return TlsError(
            f"the hub at {url} did not answer plain HTTP ({text}); it probably serves "
            "HTTPS: use https://"
        )
    what = f"{doing} " if doing else ""
    return HubUnreachable(f"{what}cannot reach the hub at {url}: {text}".strip())


def raise_for_response(response: httpx.Response) -> None:
    """Turn a hub error body into the matching ``ModelfleetError`` subclass."""
    if response.is_success:
        return
    code, message = "http_error", response.text[:500] or response.reason_phrase
    try:
        body = response.json()
        code = str(body["error"]["code"])
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        pass  # not the hub's error format (a proxy, say): keep the status and text
    cls = error_class_for(code)
    if cls is not None and cls.status == response.status_code:
        raise cls(message, code=code)
    raise HubResponseError(message, code=code, status=response.status_code)


class HubSession:
    """Requests to one hub with one credential; thread-safe, shared by its users.

    :meth:`close` releases the connections; a later request opens new ones, so an owner
    that restarts (the routing engine) can close it on every stop.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        tls: TlsFiles | None = None,
        timeout: Timeout = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.tls = tls or TlsFiles()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._verified: set[int] = set()  # id() of connections whose peer is the hub

    def _build(self) -> httpx.Client:
        """The hub connection's configuration, for every request of every caller: the
        bearer token if any, and for ``https://`` the fleet CA to verify the hub against
        and this caller's client certificate (a site's) if it has one."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        verify: ssl.SSLContext | bool = False
        if self.url.startswith("https://") and self.tls.verify:
            verify = client_context(
                self.tls.ca_file, cert_file=self.tls.cert_file, key_file=self.tls.key_file
            )
        hooks = {"response": [self._check_hub]} if verify is not False else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=self.timeout,
            verify=verify,
            event_hooks=hooks,
        )

    def _check_hub(self, response: httpx.Response) -> None:
        """The server answering must hold the *hub's* certificate, not merely one from the
        fleet CA (a site's names its own identity): checked once per connection."""
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        if ssl_object is None or id(ssl_object) in self._verified:
            return
        named = peer_identity(ssl_object)
        if named != hub_identity():
            response.close()
            raise TlsError(
                f"the server at {self.url} holds a fleet certificate that names "
                f"{named or 'no identity'}, not the hub; refusing to talk to it"
            )
        with self._lock:
            if len(self._verified) >= 256:
                self._verified.clear()
            self._verified.add(id(ssl_object))

    def reload(self, *, token: str | None = None, tls: TlsFiles | None = None) -> None:
        """Use a new credential from the next request on (a renewed site certificate):
        the pool is closed, so no connection made with the old one is reused."""
        with self._lock:
            if token is not None:
                self.token = token
            if tls is not None:
                self.tls = tls
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _client(self) -> httpx.Client:
        http = self._http
        if http is None:
            with self._lock:
                if self._http is None:
                    self._http = self._build()
                http = self._http
        return http

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One request; a success or a status in ``accept`` (e.g. 304) is returned, any
        other answer raises its error class, a transport failure :class:`HubUnreachable`.

        ``content`` is bytes or an iterator of bytes (streamed uploads); ``timeout`` None
        means the session's.
        """
        _hub_path(path)
        started = time.perf_counter()
        try:
            response = self._client().request(
                method,
                path,
                params=params,
                json=json,
                content=content,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.TransportError as exc:
            log.debug("%s %s failed after %.0f ms: %s", method, path, _ms(started), exc)
            raise transport_error(self.url, exc) from exc
        log.debug("%s %s -> %d (%.0f ms)", method, path, response.status_code, _ms(started))
        if response.status_code not in accept:
            raise_for_response(response)
        return response

    def download(
        self,
        path: str,
        partial: Path,
        size: int,
        *,
        progress: Callable[[int], None] | None = None,
        timeout: Timeout | None = None,
    ) -> None:
        """Fetch ``path`` into ``partial`` until it holds ``size`` bytes, resuming with an
        HTTP Range from what it already holds (an interrupted download keeps its bytes).

        ``progress`` gets the bytes already held when resuming, then each chunk's size.
        Verifying what arrived is the caller's (against a signed manifest).
        """
        _hub_path(path)
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        if have == size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        partial.parent.mkdir(parents=True, exist_ok=True)
        wait = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        try:
            with self._client().stream("GET", path, headers=headers, timeout=wait) as response:
                if not response.is_success:
                    response.read()
                    raise_for_response(response)
                mode = "ab" if response.status_code == 206 else "wb"
                held = have if mode == "ab" else 0
                if progress and mode == "ab":
                    progress(have)
                with partial.open(mode) as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        held += len(chunk)
                        if held > size:
                            # Never hold more than the manifest promised: a hostile or
                            # broken server cannot fill the disk through one download.
                            out.close()
                            partial.unlink(missing_ok=True)
                            raise DigestMismatch(
                                f"{path} sent more than the {size} bytes its manifest "
                                "declares; discarded"
                            )
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
            log.debug("GET %s -> %d of %d bytes (%.0f ms)", path, held, size, _ms(started))
        except httpx.TransportError as exc:
            log.debug("GET %s interrupted after %.0f ms: %s", path, _ms(started), exc)
            raise transport_error(self.url, exc, f"download of {path} interrupted:") from exc

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> HubSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _hub_path(path: str) -> None:
    """Refuse anything but a path on this hub: the session attaches the site's credential
    (certificate and token), so a URL taken from a hub answer must never lead elsewhere."""
    if not path.startswith("/") or path.startswith("//") or any(c in path for c in "\r\n\\"):
        raise InvalidInput(
            f"refusing to call {path[:120]!r} with the hub credential: only paths on the hub "
            f"at this session's URL are allowed"
        )
