"""Sites and enrollment in SQL: the query code both backends share.

The site row is the unit of locking. Enrollment redeems a token under a lock on its row
and, in the same transaction, replaces the site's token and certificate; every
assignment change (:mod:`~modelfleet.hub.store.sql.assignments`) takes the same lock
before bumping the site's revision, so
concurrent writers to one site are serialised (``FOR UPDATE`` on PostgreSQL, the
``BEGIN IMMEDIATE`` database lock on SQLite) while different sites proceed in parallel.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from modelfleet.hub.store.records.sites import (
    CertificateRecord,
    NewCertificate,
    SiteRecord,
)
from modelfleet.hub.store.repos.sites import SiteRepo
from modelfleet.hub.store.schema.sites import assignments, site_certificates, sites
from modelfleet.hub.store.sql.access import SITE_ROLE, insert_token, revoke_site_tokens

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _aware(what: str, value: datetime) -> datetime:
    # Checked up front: the column type would reject it too, but as a StoreError.
    if value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware")
    return value


def _reissue_hint(name: str) -> str:
    return f"issue a new one with `modelfleet site add --reissue {name}`"


def _site_columns() -> tuple[Any, ...]:
    # Everything but the enrollment hash and its used mark: records never carry them.
    return (
        sites.c.name,
        sites.c.labels,
        sites.c.created_at,
        sites.c.enrolled_at,
        sites.c.enrollment_expires_at,
        sites.c.last_seen,
        sites.c.report,
        sites.c.revision,
        sites.c.decommissioned_at,
    )


def _to_site(row: Row[Any]) -> SiteRecord:
    return SiteRecord(
        name=row.name,
        labels=dict(row.labels),
        created_at=row.created_at,
        enrolled_at=row.enrolled_at,
        enrollment_expires_at=row.enrollment_expires_at,
        last_seen=row.last_seen,
        report=dict(row.report),
        revision=row.revision,
        decommissioned_at=row.decommissioned_at,
    )


def _redeemable(
    conn: Connection, enrollment_hash: str, now: datetime, *, lock: bool
) -> tuple[int, str]:
    """The ``(site id, name)`` an enrollment token would enroll at ``now``;
    ``Unauthenticated`` for an unknown, used or expired one. With ``lock``, under its row's
    lock: a second redeemer blocks on it and then sees the used mark."""
    query = select(
        sites.c.id, sites.c.name, sites.c.enrollment_expires_at, sites.c.enrollment_used_at
    ).where(sites.c.enrollment_hash == enrollment_hash)
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise Unauthenticated("unknown enrollment token")
    hint = _reissue_hint(row.name)
    if row.enrollment_used_at is not None:
        raise Unauthenticated(
            f"enrollment token already used at {row.enrollment_used_at.isoformat()}; {hint}"
        )
    expires: datetime | None = row.enrollment_expires_at
    if expires is not None and now >= expires:
        raise Unauthenticated(f"enrollment token expired at {expires.isoformat()}; {hint}")
    return int(row.id), str(row.name)


def _record_certificate(
    conn: Connection, site_id: int, certificate: NewCertificate, now: datetime
) -> None:
    """Revoke every certificate the site held and record the new one."""
    live = site_certificates.c
    conn.execute(
        update(site_certificates)
        .where(live.site_id == site_id, live.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    try:
        conn.execute(
            insert(site_certificates).values(
                serial=certificate.serial,
                site_id=site_id,
                issued_at=now,
                not_after=certificate.not_after,
            )
        )
    except IntegrityError as exc:
        raise Conflict(f"a certificate with serial {certificate.serial} is recorded") from exc


def _load_site(conn: Connection, name: str) -> SiteRecord:
    row = conn.execute(select(*_site_columns()).where(sites.c.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"site {name!r} does not exist")
    return _to_site(row)


def locked_site(conn: Connection, name: str) -> tuple[int, int]:
    """The site's ``(id, revision)`` under a row lock, for a change to its desired state."""
    query = select(sites.c.id, sites.c.revision).where(sites.c.name == name).with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"site {name!r} does not exist")
    return int(row.id), int(row.revision)


class SqlSiteRepo(SiteRepo):
    """Enrollment tokens are stored by hash only and kept after use to explain replays."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def create(
        self,
        name: str,
        labels: dict[str, str],
        enrollment_hash: str,
        enrollment_expires_at: datetime,
    ) -> SiteRecord:
        _aware("enrollment_expires_at", enrollment_expires_at)
        with self._store.write() as conn:
            if conn.execute(select(exists().where(sites.c.name == name))).scalar():
                raise Conflict(f"site {name!r} already exists")
            try:
                conn.execute(
                    insert(sites).values(
                        name=name,
                        labels=labels,
                        created_at=self._store.now(),
                        enrollment_hash=enrollment_hash,
                        enrollment_expires_at=enrollment_expires_at,
                        enrollment_used_at=None,
                        enrolled_at=None,
                        last_seen=None,
                        report={},
                        revision=1,
                    )
                )
            except IntegrityError as exc:
                # A concurrent create of the same name, or a reused enrollment hash.
                raise Conflict(
                    f"site {name!r} already exists or its enrollment token is not unique"
                ) from exc
            return _load_site(conn, name)

    def get(self, name: str) -> SiteRecord | None:
        with self._store.read() as conn:
            row = conn.execute(select(*_site_columns()).where(sites.c.name == name)).one_or_none()
        return None if row is None else _to_site(row)

    def delete(self, name: str) -> bool:
        with self._store.write() as conn:
            site_id = conn.execute(
                select(sites.c.id).where(sites.c.name == name).with_for_update()
            ).scalar_one_or_none()
            if site_id is None:
                return False
            revoke_site_tokens(conn, name, self._store.now())
            conn.execute(delete(assignments).where(assignments.c.site_id == site_id))
            conn.execute(delete(site_certificates).where(site_certificates.c.site_id == site_id))
            conn.execute(delete(sites).where(sites.c.id == site_id))
        self._store.forget_token_lookups()  # its credential stops working here at once
        return True

    def set_labels(self, name: str, labels: dict[str, str]) -> SiteRecord:
        with self._store.write() as conn:
            # Labels are part of the desired state (and decide which infer tokens a site's
            # grant list carries): a change is a new revision, so long-polls see it.
            changed = conn.execute(
                update(sites)
                .where(sites.c.name == name)
                .values(labels=labels, revision=sites.c.revision + 1)
            )
            if changed.rowcount == 0:
                raise NotFound(f"site {name!r} does not exist")
            return _load_site(conn, name)

    def reissue_enrollment(self, name: str, enrollment_hash: str, expires_at: datetime) -> None:
        _aware("expires_at", expires_at)
        stmt = (
            update(sites)
            .where(sites.c.name == name)
            .values(
                enrollment_hash=enrollment_hash,
                enrollment_expires_at=expires_at,
                enrollment_used_at=None,
            )
        )
        with self._store.write() as conn:
            try:
                changed = conn.execute(stmt)
            except IntegrityError as exc:
                raise Conflict("an enrollment token with this hash already exists") from exc
            if changed.rowcount == 0:
                raise NotFound(f"site {name!r} does not exist")

    def check_enrollment(self, enrollment_hash: str, now: datetime) -> SiteRecord:
        _aware("now", now)
        with self._store.read() as conn:
            return _load_site(conn, _redeemable(conn, enrollment_hash, now, lock=False)[1])

    def enroll(
        self,
        enrollment_hash: str,
        now: datetime,
        token_hash: str,
        certificate: NewCertificate | None = None,
    ) -> SiteRecord:
        _aware("now", now)
        if certificate is not None:
            _aware("not_after", certificate.not_after)
        with self._store.write() as conn:
            site_id, name = _redeemable(conn, enrollment_hash, now, lock=True)
            if certificate is not None and certificate.site != name:
                raise Conflict(
                    f"the certificate names site {certificate.site!r}, the enrollment token "
                    f"site {name!r}"
                )
            conn.execute(
                update(sites)
                .where(sites.c.id == site_id)
                .values(enrolled_at=now, enrollment_used_at=now)
            )
            # Re-enrollment replaces the site's credential: the old one stops working.
            revoke_site_tokens(conn, name, now)
            insert_token(
                conn, now, name=f"site-{name}", role=SITE_ROLE, token_hash=token_hash, site=name
            )
            if certificate is not None:
                _record_certificate(conn, site_id, certificate, now)
            site = _load_site(conn, name)
        self._store.forget_token_lookups()  # the revoked tokens stop working here at once
        return site

    def add_certificate(self, site: str, serial: str, not_after: datetime) -> CertificateRecord:
        _aware("not_after", not_after)
        now = self._store.now()
        with self._store.write() as conn:
            site_id, _ = locked_site(conn, site)
            conn.execute(
                insert(site_certificates).values(
                    serial=serial, site_id=site_id, issued_at=now, not_after=not_after
                )
            )
        return CertificateRecord(serial, site, now, not_after, None)

    def certificate(self, serial: str) -> CertificateRecord | None:
        query = (
            select(site_certificates, sites.c.name)
            .join(sites, sites.c.id == site_certificates.c.site_id)
            .where(site_certificates.c.serial == serial)
        )
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return CertificateRecord(row.serial, row.name, row.issued_at, row.not_after, row.revoked_at)

    def revoke_certificates(self, site: str) -> int:
        with self._store.write() as conn:
            site_id, _ = locked_site(conn, site)
            result = conn.execute(
                update(site_certificates)
                .where(
                    site_certificates.c.site_id == site_id, site_certificates.c.revoked_at.is_(None)
                )
                .values(revoked_at=self._store.now())
            )
            return int(result.rowcount)

    def record_report(self, name: str, report: dict[str, Any], now: datetime) -> None:
        _aware("now", now)
        stmt = update(sites).where(sites.c.name == name).values(report=report, last_seen=now)
        with self._store.write() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"site {name!r} does not exist")

    def list(self) -> list[SiteRecord]:
        query = select(*_site_columns()).order_by(sites.c.name)
        with self._store.read() as conn:
            return [_to_site(row) for row in conn.execute(query)]
