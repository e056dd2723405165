"""Repositories of sites: registration and enrollment, and each site's desired state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.sites import (
    Assignment,
    CertificateRecord,
    NewCertificate,
    SiteRecord,
)

#: One entry of a site's full desired state: ``(model, version, ref, params)``.
AssignmentItem = tuple[str, int, str, dict[str, Any]]


class SiteRepo(ABC):
    """Sites, their one-time enrollment tokens (stored by hash) and last reports."""

    @abstractmethod
    def create(
        self,
        name: str,
        labels: dict[str, str],
        enrollment_hash: str,
        enrollment_expires_at: datetime,
    ) -> SiteRecord:
        """Register a site awaiting enrollment. ``Conflict`` if the name is taken."""

    @abstractmethod
    def get(self, name: str) -> SiteRecord | None: ...

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the site, its assignments and certificates, and revoke the tokens bound
        to it (kept, revoked, for the audit trail), in one transaction; False if it did not
        exist. A crash leaves the site whole or gone with its credential revoked."""

    @abstractmethod
    def set_labels(self, name: str, labels: dict[str, str]) -> SiteRecord:
        """Replace all labels. ``NotFound`` if the site does not exist."""

    @abstractmethod
    def reissue_enrollment(self, name: str, enrollment_hash: str, expires_at: datetime) -> None:
        """Replace the enrollment token with a fresh unused one. ``NotFound`` if absent."""

    @abstractmethod
    def check_enrollment(self, enrollment_hash: str, now: datetime) -> SiteRecord:
        """The site a one-time enrollment token would enroll at ``now``, without redeeming
        it: lets the caller check the CSR and sign the site's certificate before the
        enrollment transaction, so a bad CSR leaves the token usable. Another caller may
        still redeem the token in between; :meth:`enroll` checks again under the lock.

        Raises ``Unauthenticated`` for an unknown, already used or expired token; the
        message says which, and how to get a new one.
        """

    @abstractmethod
    def enroll(
        self,
        enrollment_hash: str,
        now: datetime,
        token_hash: str,
        certificate: NewCertificate | None = None,
    ) -> SiteRecord:
        """Redeem a one-time enrollment token and replace the site's credentials, in one
        transaction: mark the token used, revoke every token bound to the site, store a
        ``site`` token named ``site-<name>`` with ``token_hash`` bound to it, and, with a
        ``certificate``, revoke every certificate the site held and record that one.

        A crash or any failure leaves either the old credentials with the token unused or
        the new ones, never a used token without a credential nor a site with none. Of
        concurrent callers with the same token exactly one succeeds.

        Raises ``Unauthenticated`` as :meth:`check_enrollment` does; ``Conflict`` if
        ``token_hash`` or the certificate's serial is already stored, or the certificate
        names another site than the token's; in each case nothing is written.
        """

    @abstractmethod
    def add_certificate(self, site: str, serial: str, not_after: datetime) -> CertificateRecord:
        """Record a renewal's certificate; the site's earlier ones stay valid until they
        expire (the agent swaps over when it has the new one). ``NotFound`` if absent."""

    @abstractmethod
    def certificate(self, serial: str) -> CertificateRecord | None:
        """The certificate with this serial, or None if the CA never issued it to a site."""

    @abstractmethod
    def revoke_certificates(self, site: str) -> int:
        """Revoke every certificate of the site; how many were still unrevoked."""

    @abstractmethod
    def record_report(self, name: str, report: dict[str, Any], now: datetime) -> None:
        """Keep the agent's latest report and mark the site seen. ``NotFound`` if absent."""

    @abstractmethod
    def list(self) -> list[SiteRecord]:
        """All sites, ordered by name."""


class AssignmentRepo(ABC):
    """Each site's desired state: which model versions it should serve.

    Every change bumps the site's revision in the same transaction, so an agent
    long-polling with the revision as ETag never misses a change nor sees half of one.
    """

    @abstractmethod
    def set(self, site: str, model: str, version: int, ref: str, params: dict[str, Any]) -> int:
        """Assign (or reassign) ``model`` at ``site``; returns the new revision. A
        decommissioned site is in service again.

        ``NotFound`` if the site or the model version does not exist.
        """

    @abstractmethod
    def remove(self, site: str, model: str) -> int:
        """Unassign ``model``; returns the new revision. ``NotFound`` if not assigned."""

    @abstractmethod
    def replace(self, site: str, items: Sequence[AssignmentItem]) -> int:
        """Make ``items`` the site's whole desired state with one revision bump.

        ``InvalidInput`` if a model appears twice; ``NotFound`` for an unknown site or
        model version, in which case nothing changes.
        """

    @abstractmethod
    def decommission(self, site: str) -> int:
        """Remove every assignment of ``site`` and mark it decommissioned, with one revision
        bump; returns the new revision. The next :meth:`set` or :meth:`replace` puts the
        site back in service. ``NotFound`` for an unknown site."""

    @abstractmethod
    def revision(self, site: str) -> int:
        """The site's current desired-state revision. ``NotFound`` if absent."""

    @abstractmethod
    def all_revisions(self) -> dict[str, int]:
        """Every site's desired-state revision, in one query."""

    @abstractmethod
    def site_has_digest(self, site: str, digest: str) -> bool:
        """True if a version assigned to ``site`` has this blob: a site may only
        download what it has been given."""

    @abstractmethod
    def sites_with_model(self, model: str) -> list[str]:
        """Names of the sites with any version of ``model`` assigned, ordered."""

    @abstractmethod
    def list(self, site: str) -> list[Assignment]:
        """The site's assignments ordered by model name; empty for an unknown site."""
