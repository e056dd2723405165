"""The site's only connection: outbound HTTP to the hub (sites dial out, never listen to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelfleet.errors import HubUnreachable
from modelfleet.hub_client import raise_for_response

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Enrollment:
    site: str
    token: str
    public_key: str
    labels: dict[str, str]


def enroll(hub_url: str, enrollment_token: str, *, timeout: float = 30.0) -> Enrollment:
    """Exchange a one-time enrollment token for the site credential and the hub's key."""
    try:
        response = httpx.post(
            f"{hub_url.rstrip('/')}/api/v1/enroll",
            json={"token": enrollment_token},
            timeout=timeout,
        )
    except httpx.TransportError as exc:
        raise HubUnreachable(f"cannot reach the hub at {hub_url} to enroll: {exc}") from exc
    raise_for_response(response)
    body = response.json()
    return Enrollment(
        site=body["site"], token=body["token"], public_key=body["public_key"], labels=body["labels"]
    )


class HubLink:
    """Long-poll desired state, download blobs with resume, post reports."""

    def __init__(self, hub_url: str, site: str, token: str, *, long_poll_s: float = 30.0) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.site = site
        self.long_poll_s = long_poll_s
        self._http = httpx.Client(
            base_url=self.hub_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=long_poll_s + 15.0),
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HubUnreachable(f"hub {self.hub_url} unreachable: {exc}") from exc

    def desired_state(
        self, etag: str | None, *, wait: float | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The new (etag, document), or None when unchanged within the wait."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._call(
            "GET",
            f"/api/v1/sites/{self.site}/desired-state",
            params={"wait": self.long_poll_s if wait is None else wait},
            headers=headers,
        )
        if response.status_code == 304:
            return None
        raise_for_response(response)
        return response.headers.get("etag", ""), response.json()

    def download(self, url_path: str, partial: Path, size: int) -> None:
        """Fetch into ``partial``, resuming from what is already there (HTTP Range)."""
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        if have == size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._http.stream("GET", url_path, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise_for_response(response)
                mode = "ab" if response.status_code == 206 else "wb"
                with partial.open(mode) as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise HubUnreachable(f"download of {url_path} interrupted: {exc}") from exc

    def report(self, body: dict[str, Any]) -> None:
        response = self._call("POST", f"/api/v1/sites/{self.site}/report", json=body)
        raise_for_response(response)
