"""Records of sites and their desired state (one assignment per model a site should serve)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SiteRecord:
    """A registered site; the enrollment secret's hash stays in the store, never here."""

    name: str
    labels: dict[str, str]
    created_at: datetime
    enrolled_at: datetime | None  # the last successful enrollment, None until the first
    enrollment_expires_at: datetime | None
    last_seen: datetime | None  # when the agent last reported
    report: dict[str, Any]  # the agent's last report verbatim; {} before any
    revision: int  # desired-state revision: the agent's long-poll ETag, starts at 1
    #: When the operator decommissioned the site (its signed desired state then tells it to
    #: wipe its cache); None while it is in service. An assignment puts it back in service.
    decommissioned_at: datetime | None = None


@dataclass(frozen=True)
class Assignment:
    """One model version a site should be serving, as part of its desired state."""

    site: str
    model: str
    version: int
    ref: str  # what the operator asked for, e.g. "pump@production", kept for display
    params: dict[str, Any]  # serving settings such as batching, passed to the agent as-is
    digest: str  # the version's blob, so the agent can fetch and verify it
    assigned_at: datetime
    #: The version is below one assigned here before (while this assignment lasted): the
    #: hub means it as a rollback, and says so, signed, to the site.
    downgrade: bool = False


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate the fleet CA issued to a site (its serial in hex)."""

    serial: str
    site: str
    issued_at: datetime
    not_after: datetime
    revoked_at: datetime | None

    def valid(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.not_after


@dataclass(frozen=True)
class NewCertificate:
    """A certificate the CA signed before the enrollment transaction, for it to record.

    ``site`` is the site it names: enrollment refuses to record it for any other."""

    site: str
    serial: str
    not_after: datetime
