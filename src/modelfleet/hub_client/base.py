"""The transport half of :class:`~modelfleet.hub_client.HubClient`: one session, typed
answers. Split out so the calls can live in modules by area and stay short."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from modelfleet.api import Record
from modelfleet.pki.tls import TlsFiles
from modelfleet.settings import ClientSettings
from modelfleet.transport.session import HubSession

R = TypeVar("R", bound=Record)


class HubClientBase:
    """A session to the hub's ``/api/v1`` and the helpers that parse its answers."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        ca_file: str | Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        env = ClientSettings()
        self.url = (url or env.hub_url).rstrip("/")
        self.token = token if token is not None else env.token
        ca = Path(ca_file) if ca_file is not None else env.ca_file
        self._session = HubSession(self.url, self.token, tls=TlsFiles(ca), timeout=timeout)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any hub request (``kwargs`` as :meth:`HubSession.request`); errors raised."""
        return self._session.request(method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _one(self, cls: type[R], method: str, path: str, **kwargs: Any) -> R:
        return cls.model_validate(self._json(method, path, **kwargs))

    def _many(self, cls: type[R], method: str, path: str, **kwargs: Any) -> list[R]:
        return [cls.model_validate(item) for item in self._json(method, path, **kwargs)]
