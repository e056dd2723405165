"""Sites on the hub: registration, enrollment, assignments, desired state, reports.

Desired state is versioned by a per-site revision that every assignment change bumps in
the same transaction; the revision is the ETag sites long-poll on. The
:class:`~modelfleet.hub.wakeups.Notifier`
wakes waiting long-polls in this process at once; waiters also re-read the revision every
second so a change made through another hub replica is seen too.
"""

from __future__ import annotations

import builtins
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.auth import hash_token, new_token_secret
from modelfleet.hub.certificates import SiteCertificates, split_enrollment_token
from modelfleet.hub.grants import GrantIssuer
from modelfleet.hub.registry import Registry
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import Assignment, NewCertificate, SiteRecord
from modelfleet.pki import IssuedCertificate
from modelfleet.refs import check_name, parse_ref
from modelfleet.registry.desired_state import DesiredModel, DesiredState, sign_desired_state
from modelfleet.serving_params import check_serving_params
from modelfleet.settings import HubSettings

ENROLLMENT_PREFIX = "mfe_"
LABEL_KEYS_WELL_KNOWN = ("region", "jurisdiction", "provider", "tier")


def parse_labels(items: list[str] | dict[str, str]) -> dict[str, str]:
    """``["region=eu-west", ...]`` or a dict -> validated labels."""
    pairs = items.items() if isinstance(items, dict) else [_split_label(i) for i in items]
    labels: dict[str, str] = {}
    for key, value in pairs:
        check_name(key, "label key")
        check_name(value, f"value of label {key!r}")
        labels[key] = value
    return labels


def _split_label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise InvalidInput(f"invalid label {item!r}: expected key=value such as region=eu-west")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class Enrolled:
    site: SiteRecord
    token: str
    certificate: bytes | None = None  # PEM, when the agent sent a CSR


#: How old a revision a long-poll's periodic re-check may see (changes made through this
#: process wake the poll at once and are read exactly).
REVISIONS_MAX_AGE_S = 0.5


class Sites:
    """The sites service (protocol-free; the API calls it from worker threads)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: HubSettings,
        certificates: SiteCertificates,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.certificates = certificates
        #: Signed lists of the infer tokens each site honours (in every desired state).
        self.grants = GrantIssuer(store, registry)
        # Every site's revision from one query, shared by all long-polls of this process.
        self._revisions: tuple[float, dict[str, int]] = (-math.inf, {})
        self._revisions_lock = threading.Lock()

    def list(self) -> list[SiteRecord]:
        """Every registered site, ordered by name."""
        return self.store.sites.list()

    def get(self, name: str) -> SiteRecord:
        record = self.store.sites.get(check_name(name, "site name"))
        if record is None:
            raise NotFound(f"site {name!r} does not exist (see `modelfleet site ls`)")
        return record

    def add(
        self, name: str, labels: dict[str, str], ttl: str | float | None = None
    ) -> tuple[SiteRecord, str]:
        """``ttl``: the enrollment token's lifetime (duration or seconds; None: the default),
        bounded by ``enrollment_max_ttl_s``."""
        check_name(name, "site name")
        secret = ENROLLMENT_PREFIX + secrets.token_urlsafe(24)
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.enrollment_ttl(ttl))
        record = self.store.sites.create(name, parse_labels(labels), hash_token(secret), expires)
        return record, self.certificates.enrollment_token(secret)

    def reissue(self, name: str, ttl: str | float | None = None) -> tuple[SiteRecord, str]:
        site = self.get(name)
        secret = ENROLLMENT_PREFIX + secrets.token_urlsafe(24)
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.enrollment_ttl(ttl))
        self.store.sites.reissue_enrollment(site.name, hash_token(secret), expires)
        return self.get(name), self.certificates.enrollment_token(secret)

    def enroll(self, enrollment_token: str, csr: bytes | None = None) -> Enrolled:
        """Exchange a one-time enrollment token (and the agent's CSR) for the site's
        certificate and bearer credential.

        The CSR is checked and the certificate signed first, so a bad CSR is refused with
        the token still usable; then one store transaction redeems the token, revokes the
        site's old credentials and records the new ones (re-enrollment replaces them)."""
        secret, _ = split_enrollment_token(enrollment_token)
        if not secret.startswith(ENROLLMENT_PREFIX):
            raise InvalidInput("that is not an enrollment token (they start with 'mfe_')")
        enrollment_hash = hash_token(secret)
        now = self.store.now()
        issued: IssuedCertificate | None = None
        certificate: NewCertificate | None = None
        if csr is not None:
            # An unknown, used or expired token is refused before the CSR is looked at.
            named = self.store.sites.check_enrollment(enrollment_hash, now)
            issued = self.certificates.issue(named.name, csr)
            certificate = NewCertificate(named.name, issued.serial, issued.not_after)
        token = new_token_secret()
        site = self.store.sites.enroll(enrollment_hash, now, hash_token(token), certificate)
        if certificate is not None:
            self.certificates.forget()  # the site's earlier certificates were revoked
        return Enrolled(site=site, token=token, certificate=issued.pem if issued else None)

    def remove(self, name: str) -> None:
        """Forget the site, revoking its credential and certificates in the same
        transaction. The site is not told: to wipe its cache first, :meth:`decommission`
        it and wait for it to apply that revision."""
        if not self.store.sites.delete(check_name(name, "site name")):
            raise NotFound(f"site {name!r} does not exist (see `modelfleet site ls`)")
        self.certificates.forget()

    def decommission(self, name: str) -> SiteRecord:
        """Take the site out of service: every assignment removed, and its next signed
        desired state tells it to unload its models and delete their last-good copies and
        cached blobs. Deployments leave it alone until an operator assigns it a model."""
        site = self.get(name)
        self.store.assignments.decommission(site.name)
        return self.get(name)

    def set_labels(self, name: str, labels: dict[str, str]) -> SiteRecord:
        return self.store.sites.set_labels(self.get(name).name, parse_labels(labels))

    def assign(self, name: str, ref: str, params: dict[str, Any] | None = None) -> Assignment:
        site = self.get(name)
        version = self.registry.resolve(parse_ref(ref))
        checked = check_serving_params(params)
        self.store.assignments.set(site.name, version.model, version.version, ref, checked)
        return next(a for a in self.store.assignments.list(site.name) if a.model == version.model)

    def unassign(self, name: str, model: str) -> None:
        site = self.get(name)
        if not any(a.model == model for a in self.store.assignments.list(site.name)):
            raise NotFound(f"site {name!r} has no assignment for model {model!r}")
        self.store.assignments.remove(site.name, model)

    def replace(self, name: str, items: builtins.list[tuple[str, dict[str, Any]]]) -> int:
        site = self.get(name)
        resolved = []
        seen: set[str] = set()
        for ref, params in items:
            version = self.registry.resolve(parse_ref(ref))
            if version.model in seen:
                raise InvalidInput(f"model {version.model!r} is assigned twice to site {name!r}")
            seen.add(version.model)
            resolved.append(
                (version.model, version.version, ref, check_serving_params(params, ref))
            )
        return self.store.assignments.replace(site.name, resolved)

    def revision(self, name: str, *, recent: bool = False) -> int:
        """The site's desired-state revision; with ``recent``, possibly up to
        :data:`REVISIONS_MAX_AGE_S` old, from one table-wide read shared by every caller
        (a long-poll re-checking for changes made through another replica)."""
        if recent:
            known = self.known_revision(name)
            if known is not None:
                return known
            with self._revisions_lock:  # one caller refreshes; the rest find it fresh
                known = self.known_revision(name)
                if known is not None:
                    return known
                table = self.store.assignments.all_revisions()
                self._revisions = (time.monotonic(), table)
            if name in table:
                return table[name]
        return self.store.assignments.revision(self.get(name).name)

    def known_revision(self, name: str) -> int | None:
        """The revision from a table-wide read at most :data:`REVISIONS_MAX_AGE_S` old,
        without any I/O; None when there is none."""
        read_at, table = self._revisions
        if time.monotonic() - read_at > REVISIONS_MAX_AGE_S:
            return None
        return table.get(name)

    def desired_state(self, name: str) -> dict[str, Any]:
        """What the site should run: the signed document (``signed``: every model's version,
        signed manifest and parameters, bound to the site, its revision and an expiry; see
        :mod:`modelfleet.registry.desired_state`), with the signed key set and grant list.
        ``site``, ``revision`` and ``labels`` are repeated unsigned for people reading it."""
        site = self.get(name)
        models = []
        for item in self.store.assignments.list(site.name):
            version = self.registry.version(item.model, item.version)
            if version is None:  # pragma: no cover - prevented by a foreign key
                continue
            models.append(
                DesiredModel(
                    name=item.model,
                    version=item.version,
                    ref=item.ref,
                    manifest=version.manifest,
                    signature=version.signature,
                    params=item.params,
                    downgrade=item.downgrade,
                )
            )
        keyset = self.registry.signed_keyset()
        issued = datetime.now(UTC)
        text, signature = sign_desired_state(
            DesiredState(
                site=site.name,
                revision=site.revision,
                issued_at=issued,
                expires_at=issued + timedelta(seconds=self.settings.desired_state_ttl_s),
                models=tuple(models),
                labels=site.labels,
                decommission=site.decommissioned_at is not None,
            ),
            self.registry.keys.current,
        )
        return {
            "site": site.name,
            "revision": site.revision,
            "labels": site.labels,
            "signed": {"text": text, "signature": signature},
            # The signing keys, signed: a site learns of a rotation here, before the first
            # manifest signed by the new key reaches it (in this same document or a later one).
            "keyset": {
                "revision": keyset.revision,
                "text": keyset.text,
                "signature": keyset.signature,
            },
            # The infer tokens this site honours, signed for it and issued now: the site
            # checks inference callers against it, offline (modelfleet/grants.py).
            "grants": self.grants.for_site(site.name, site.labels),
        }

    def keyset_revision(self) -> int:
        """Part of every desired state's ETag: a key rotation is news to every site."""
        return self.registry.signed_keyset().revision

    def report(self, name: str, body: dict[str, Any]) -> None:
        self.store.sites.record_report(self.get(name).name, body, datetime.now(UTC))

    def online(self, site: SiteRecord, now: datetime | None = None) -> bool:
        if site.last_seen is None:
            return False
        now = now or datetime.now(UTC)
        return (now - site.last_seen).total_seconds() <= self.settings.offline_after_s

    def view(self, site: SiteRecord) -> dict[str, Any]:
        """The operator's picture of one site: labels, liveness, desired vs reported."""
        report = site.report or {}
        assignments = {a.model: a for a in self.store.assignments.list(site.name)}
        reported: dict[str, dict[str, Any]] = {
            str(m["name"]): m
            for m in report.get("models", [])
            if isinstance(m, dict) and isinstance(m.get("name"), str)
        }
        models = []
        for name in sorted(set(assignments) | set(reported)):
            assigned = assignments.get(name)
            state = reported.get(name, {})
            models.append(
                {
                    "name": name,
                    "assigned_version": assigned.version if assigned else None,
                    "ref": assigned.ref if assigned else None,
                    "active_version": state.get("active_version"),
                    "state": state.get("state", "pending" if assigned else "unassigned"),
                    "error": state.get("error"),
                }
            )
        return {
            "name": site.name,
            "labels": site.labels,
            "online": self.online(site),
            "enrolled": site.enrolled_at is not None,
            "enrolled_at": site.enrolled_at,
            "enrollment_expires_at": site.enrollment_expires_at,
            "last_seen": site.last_seen,
            "revision": site.revision,
            "applied_revision": report.get("applied_revision"),
            "agent_version": report.get("agent_version"),
            "uptime_s": report.get("uptime_s"),
            "url": report.get("url"),
            "desired_state_refused": report.get("desired_state_refused"),
            "storage": report.get("storage") or {},
            "decommissioned_at": site.decommissioned_at,
            "models": models,
            "created_at": site.created_at,
        }
