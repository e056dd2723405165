"""The store contract for enrollment: one transaction redeems the token and replaces the
site's credentials (issue 16), on every backend.

Each failure case checks the three things a half-done enrollment would leave behind: the
enrollment token still redeemable, the site's old bearer token still active and its old
certificate still valid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelfleet.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import NewCertificate
from tests.hub.store.conftest import OpenBackend
from tests.hub.store.test_contract_sites import LATER, NOW, add_site, run_concurrently


def active(store: Store, token_hash: str) -> bool | None:
    """Whether the token with this hash is unrevoked; None if no token has it."""
    record = store.tokens.find_by_hash(token_hash)
    return None if record is None else record.revoked_at is None


def valid(store: Store, serial: str, now: datetime = NOW) -> bool | None:
    record = store.sites.certificate(serial)
    return None if record is None else record.valid(now)


def cert(serial: str, site: str = "berlin") -> NewCertificate:
    return NewCertificate(site, serial, LATER)


def test_enroll_once_and_the_check_redeems_nothing(store: Store) -> None:
    add_site(store, token="tok")
    checked = store.sites.check_enrollment("tok", NOW)
    assert (checked.name, checked.enrolled_at) == ("berlin", None)
    assert store.sites.check_enrollment("tok", NOW) == checked  # still redeemable
    enrolled = store.sites.enroll("tok", NOW, "cred-1")
    assert (enrolled.name, enrolled.enrolled_at) == ("berlin", NOW)
    assert store.sites.get("berlin") == enrolled
    token = store.tokens.find_by_hash("cred-1")
    assert token is not None
    assert (token.name, token.role, token.site, token.revoked_at) == (
        "site-berlin",
        "site",
        "berlin",
        None,
    )
    for redeem in (
        lambda: store.sites.check_enrollment("tok", NOW),
        lambda: store.sites.enroll("tok", NOW, "cred-2"),
    ):
        with pytest.raises(Unauthenticated, match=r"already used .*--reissue berlin"):
            redeem()
    with pytest.raises(Unauthenticated, match=r"^unknown enrollment token$"):
        store.sites.check_enrollment("never-issued", NOW)
    with pytest.raises(Unauthenticated, match=r"^unknown enrollment token$"):
        store.sites.enroll("never-issued", NOW, "cred-3")
    assert store.tokens.find_by_hash("cred-2") is None
    assert store.tokens.find_by_hash("cred-3") is None
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.sites.enroll("tok", NOW.replace(tzinfo=None), "cred-4")


def test_expired_enrollment(store: Store) -> None:
    store.sites.create("berlin", {}, "tok", NOW)
    expected = (
        f"enrollment token expired at {NOW.isoformat()}; "
        "issue a new one with `modelfleet site add --reissue berlin`"
    )
    for redeem in (
        lambda: store.sites.check_enrollment("tok", NOW),
        lambda: store.sites.enroll("tok", NOW, "cred-1"),
    ):
        with pytest.raises(Unauthenticated) as info:
            redeem()
        assert info.value.message == expected
    site = store.sites.get("berlin")
    assert site is not None
    assert site.enrolled_at is None
    assert store.tokens.find_by_hash("cred-1") is None
    assert store.sites.enroll("tok", NOW - timedelta(microseconds=1), "cred-1").enrolled_at


def test_reissue_enrollment(store: Store) -> None:
    add_site(store, token="first")
    store.sites.enroll("first", NOW, "cred-1")
    later = NOW + timedelta(days=3)
    store.sites.reissue_enrollment("berlin", "second", later + timedelta(hours=1))
    with pytest.raises(Unauthenticated, match="unknown"):
        store.sites.enroll("first", later, "cred-2")
    again = store.sites.enroll("second", later, "cred-2")
    assert again.enrolled_at == later
    assert again.enrollment_expires_at == later + timedelta(hours=1)
    with pytest.raises(Unauthenticated, match="already used"):
        store.sites.enroll("second", later, "cred-3")
    with pytest.raises(NotFound):
        store.sites.reissue_enrollment("nope", "third", LATER)
    add_site(store, "paris", token="taken")
    with pytest.raises(Conflict):
        store.sites.reissue_enrollment("berlin", "taken", LATER)


def test_reenrollment_replaces_only_the_sites_own_token(store: Store) -> None:
    add_site(store, token="b1")
    add_site(store, "paris", token="p1")
    store.tokens.create(name="root", role="admin", token_hash="admin-cred")
    store.sites.enroll("b1", NOW, "berlin-1", cert("aa01"))
    store.sites.enroll("p1", NOW, "paris-1", cert("pp01", "paris"))
    assert active(store, "berlin-1") is True  # looked up, so remembered by this process
    later = NOW + timedelta(hours=1)
    store.sites.reissue_enrollment("berlin", "b2", LATER)
    store.sites.enroll("b2", later, "berlin-2")
    # The old token stops working at once (no stale lookup), the new one works; another
    # site's credentials and the admin's are untouched.
    old = store.tokens.find_by_hash("berlin-1")
    assert old is not None
    assert old.revoked_at == later
    assert [active(store, h) for h in ("berlin-2", "paris-1", "admin-cred")] == [True] * 3
    # Without a CSR the certificates are left alone; with one they are replaced.
    assert [valid(store, s) for s in ("aa01", "pp01")] == [True, True]
    store.sites.add_certificate("berlin", "aa02", LATER)  # a renewal
    store.sites.reissue_enrollment("berlin", "b3", LATER)
    store.sites.enroll("b3", later, "berlin-3", cert("aa03"))
    assert [valid(store, s) for s in ("aa01", "aa02", "aa03", "pp01")] == [
        False,
        False,
        True,
        True,
    ]
    assert [active(store, h) for h in ("berlin-2", "berlin-3", "paris-1")] == [False, True, True]
    assert store.sites.revoke_certificates("berlin") == 1
    store.sites.delete("berlin")
    assert store.sites.certificate("aa03") is None


def test_a_failure_inside_the_enrollment_writes_nothing(store: Store) -> None:
    add_site(store, token="t1")
    add_site(store, "paris", token="p1")
    first = store.sites.enroll("t1", NOW, "cred-1", cert("aa01"))
    store.sites.enroll("p1", NOW, "paris-1", cert("pp01", "paris"))
    store.tokens.create(name="ops", role="operator", token_hash="taken")
    store.sites.reissue_enrollment("berlin", "t2", LATER)
    later = NOW + timedelta(hours=1)

    def unchanged() -> None:
        assert store.sites.check_enrollment("t2", later).enrolled_at == first.enrolled_at
        assert active(store, "cred-1") is True
        assert valid(store, "aa01") is True
        assert store.tokens.find_by_hash("cred-2") is None
        assert active(store, "taken") is True

    # The new token's hash is taken: the token insert fails after the redeem and revoke.
    with pytest.raises(Conflict, match="token with this hash"):
        store.sites.enroll("t2", later, "taken", cert("aa02"))
    unchanged()
    assert store.sites.certificate("aa02") is None
    # The certificate insert fails, the last statement: everything before it goes too.
    with pytest.raises(Conflict, match="serial pp01"):
        store.sites.enroll("t2", later, "cred-2", cert("pp01"))
    unchanged()
    taken = store.sites.certificate("pp01")
    assert taken is not None
    assert (taken.site, taken.valid(NOW)) == ("paris", True)
    # A certificate signed for another site than the token's is never recorded.
    with pytest.raises(Conflict, match="names site 'paris'"):
        store.sites.enroll("t2", later, "cred-2", cert("aa02", "paris"))
    unchanged()
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.sites.enroll(
            "t2", later, "cred-2", NewCertificate("berlin", "aa02", datetime(2031, 1, 1))
        )
    unchanged()
    # The token still works, once.
    assert store.sites.enroll("t2", later, "cred-2", cert("aa02")).enrolled_at == later
    assert [active(store, h) for h in ("cred-1", "cred-2")] == [False, True]
    assert [valid(store, s) for s in ("aa01", "aa02", "pp01")] == [False, True, True]


def test_concurrent_enrollments_with_one_token_one_winner(open_backend: OpenBackend) -> None:
    """Hub processes redeeming the same token at once (one store each): exactly one
    enrolls, and nothing of the losers' credentials is stored."""
    threads = 4
    stores = [open_backend() for _ in range(threads)]
    add_site(stores[0], token="tok")
    now = datetime.now(UTC)

    def enroll(i: int) -> int:
        stores[i].sites.enroll("tok", now, f"cred-{i}", cert(f"serial-{i}"))
        return i

    winners, errors = run_concurrently(threads, enroll)
    assert len(winners) == 1
    assert len(errors) == threads - 1
    assert all(isinstance(e, Unauthenticated) and "already used" in str(e) for e in errors)
    check = stores[-1]
    for i in range(threads):
        won = i == winners[0]
        assert active(check, f"cred-{i}") is (True if won else None)
        assert valid(check, f"serial-{i}", now) is (True if won else None)
