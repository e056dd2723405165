"""What the site agent asks of the hub (sites dial out; the hub never connects to them):
enrollment once, then desired-state long-polls, blob downloads and reports.

Every request goes through the agent's one :class:`HubSession` (shared with the telemetry
shipper and the federated worker); this module only knows the paths and the timeouts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.crashpoints import crash_point
from modelfleet.transport.session import HubSession, poll_timeout

log = logging.getLogger("modelfleet.site")

#: Connecting to the hub (and sending a request) must not take longer than this.
CONNECT_TIMEOUT_S = 10.0


class Reachability:
    """Whether the hub answers the site's desired-state polls, and the log lines that says.

    An operator wants to read when the hub went away and when it came back, not every
    retry in between: the first failure of an outage is one WARNING, the first answer after
    it one INFO line with how long the hub was away, the retries DEBUG. Refusals (the hub
    answers, but no) are WARNING once per distinct reason. Only the poller calls this: it
    is the one loop that talks to the hub all the time, so it sees an outage first.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: None until the first answer or failure; then whether the last poll was answered.
        self.reachable: bool | None = None
        self._since = time.monotonic()  # start of the current outage (or of the agent)
        self._refusal: str | None = None

    def failed(self, reason: str) -> None:
        """A poll found no hub (refused, reset, timed out)."""
        reason = reason.rstrip(".")
        if self.reachable is False:
            log.debug("hub still unreachable: %s", reason)
            return
        if self.reachable is True:
            self._since = time.monotonic()
        self.reachable = False
        # The reason names the hub's URL (HubUnreachable's message does).
        log.warning("hub unreachable: %s; serving what is cached, retrying", reason)

    def refused(self, reason: str) -> None:
        """The hub answered the poll with an error."""
        self.answered()
        level = logging.DEBUG if reason == self._refusal else logging.WARNING
        self._refusal = reason
        log.log(level, "hub refused the desired-state request: %s", reason)

    def answered(self) -> bool:
        """A poll got an answer; True when that ends an outage (or is the first contact)."""
        if self.reachable is True:
            return False
        if self.reachable is False:
            log.info("hub at %s back after %.1fs", self.url, time.monotonic() - self._since)
        else:
            log.debug("hub at %s reached", self.url)
        self.reachable = True
        return True

    def accepted(self) -> None:
        """A poll succeeded: a later refusal, even the same one, is news again."""
        self._refusal = None


@dataclass(frozen=True)
class Enrollment:
    site: str
    token: str
    public_key: str
    labels: dict[str, str]


def enroll(hub_url: str, enrollment_token: str, *, timeout: float = 30.0) -> Enrollment:
    """Exchange a one-time enrollment token for the site credential and the hub's key.

    A session of its own: nothing is known about the hub yet (no credential; with TLS, no
    pinned CA either, only the fingerprint the token carries), and it is used once.
    """
    with HubSession(hub_url, timeout=timeout) as session:
        body = session.request("POST", "/api/v1/enroll", json={"token": enrollment_token}).json()
    return Enrollment(
        site=body["site"], token=body["token"], public_key=body["public_key"], labels=body["labels"]
    )


class HubLink:
    """Long-poll desired state, download blobs with resume, post reports."""

    def __init__(self, session: HubSession, site: str, *, long_poll_s: float = 30.0) -> None:
        self.session = session
        self.site = site
        self.long_poll_s = long_poll_s
        # Every call may wait as long as the long-poll (as before: one client, one timeout).
        self._timeout = poll_timeout(long_poll_s, connect_s=CONNECT_TIMEOUT_S)

    def desired_state(
        self, etag: str | None, *, wait: float | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The new (etag, document), or None when unchanged within the wait."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self.session.request(
            "GET",
            f"/api/v1/sites/{self.site}/desired-state",
            params={"wait": self.long_poll_s if wait is None else wait},
            headers=headers,
            timeout=self._timeout,
            accept=(304,),
        )
        if response.status_code == 304:
            log.debug("desired state unchanged (ETag %s)", etag)
            return None
        doc = response.json()
        log.debug("desired state revision %s received", doc.get("revision"))
        return response.headers.get("etag", ""), doc

    def download(self, url_path: str, partial: Path, size: int) -> None:
        """Fetch into ``partial``, resuming from what is already there (HTTP Range)."""
        self.session.download(
            url_path, partial, size, progress=_chunk_written, timeout=self._timeout
        )

    def report(self, body: dict[str, Any]) -> None:
        self.session.request(
            "POST", f"/api/v1/sites/{self.site}/report", json=body, timeout=self._timeout
        )


def _chunk_written(_bytes: int) -> None:
    """Called after each chunk of a blob reached the partial file (and once, first, with the
    bytes already held when resuming): the window where a kill leaves a half download on
    disk, which the next attempt must resume with ``Range: bytes=<size on disk>-``."""
    crash_point("site.reconcile.mid_download")
