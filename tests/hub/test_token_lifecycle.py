"""Token lifecycle on the hub: TTLs and their bounds, last use, the last admin, break-glass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelfleet.errors import Conflict, Unauthenticated
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.settings import format_duration, parse_duration
from modelfleet.sim.launcher import HubProcess
from tests.conftest import InProcessHub


def _created(
    hub: InProcessHub, token: str | None = None, **body: object
) -> tuple[int, dict[str, object]]:
    response = hub.client.post("/api/v1/tokens", json=body, headers=hub.headers(token))
    return response.status_code, response.json()


def _expires(answer: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(answer["expires_at"]).replace("Z", "+00:00"))


def test_durations_parse_and_print_back() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "12h", "30d", "2w", "45")] == [
        90,
        1800,
        43200,
        30 * 86400,
        14 * 86400,
        45,
    ]
    assert parse_duration(3600.0) == 3600
    assert [format_duration(s) for s in (30 * 86400, 43200, 90, 14 * 86400)] == [
        "30d",
        "12h",
        "90s",
        "14d",
    ]
    for bad in ("12x", "", "-1h", "0", "h", "1.5.2d"):
        with pytest.raises(Exception, match=r"duration|longer than zero"):
            parse_duration(bad)


def test_token_ttls_defaults_and_bounds(hub_factory: Callable[..., InProcessHub]) -> None:
    hub = hub_factory()
    before = datetime.now(UTC)
    status, viewer = _created(hub, name="ci", role="viewer", ttl="12h")
    assert status == 201
    assert (
        before + timedelta(hours=12) <= _expires(viewer) <= datetime.now(UTC) + timedelta(hours=12)
    )
    # No TTL: the role's default (admin 30 days, others 90 days); seconds are accepted too.
    _, admin = _created(hub, name="second-admin", role="admin")
    assert _expires(admin) - before <= timedelta(days=30, minutes=1)
    assert _expires(admin) - before >= timedelta(days=30) - timedelta(minutes=1)
    _, operator = _created(hub, name="op", role="operator")
    assert _expires(operator) - before >= timedelta(days=90) - timedelta(minutes=1)
    assert _created(hub, name="secs", role="viewer", ttl=3600)[0] == 201
    # Bad durations and TTLs above the maximum: 400 with the reason, nothing created.
    count = len(hub.client.get("/api/v1/tokens", headers=hub.headers()).json())
    for ttl, needle in (("12x", "not a duration"), ("400d", "longer than the hub allows"),
                        ("0", "longer than zero"), (-5, "longer than zero")):  # fmt: skip
        status, answer = _created(hub, name="bad", role="viewer", ttl=ttl)
        assert status == 400, answer
        assert needle in str(answer["error"]), answer
    assert len(hub.client.get("/api/v1/tokens", headers=hub.headers()).json()) == count
    # A hub configured with a tighter maximum refuses what the default would allow.
    tight = hub_factory(token_max_ttl_s=7 * 86400, admin_token_ttl_s=86400, token_ttl_s=86400)
    status, answer = _created(tight, name="long", role="viewer", ttl="8d")
    assert status == 400
    assert "7d" in str(answer["error"])


def test_enrollment_ttls_are_bounded(hub_factory: Callable[..., InProcessHub]) -> None:
    hub = hub_factory()
    post = hub.client.post
    ok = post(
        "/api/v1/sites",
        json={"name": "plant-a", "enrollment_ttl_s": "2h"},
        headers=hub.headers(),
    )
    assert ok.status_code == 201
    too_long = post(
        "/api/v1/sites",
        json={"name": "plant-b", "enrollment_ttl_s": "8d"},
        headers=hub.headers(),
    )
    assert too_long.status_code == 400
    assert "longer than the hub allows (7d" in too_long.json()["error"]["message"]
    garbled = post(
        "/api/v1/sites/plant-a/enrollment", json={"enrollment_ttl_s": "soon"}, headers=hub.headers()
    )
    assert garbled.status_code == 400
    assert "not a duration" in garbled.json()["error"]["message"]
    before = datetime.now(UTC)
    reissued = post(
        "/api/v1/sites/plant-a/enrollment", json={"enrollment_ttl_s": "30m"}, headers=hub.headers()
    )
    assert reissued.status_code == 201
    expires = datetime.fromisoformat(reissued.json()["enrollment_expires_at"])
    assert expires <= datetime.now(UTC) + timedelta(minutes=30)
    assert expires >= before + timedelta(minutes=30)
    # No body: the default TTL, as before.
    assert post("/api/v1/sites/plant-a/enrollment", headers=hub.headers()).status_code == 201


def test_the_last_active_admin_token_cannot_be_revoked(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    """The issue's lock-out: DELETE on the only admin token answered 204 and nobody could
    administer the hub again. Now 409, naming the way out, and the token keeps working."""
    hub = hub_factory()
    tokens = hub.client.get("/api/v1/tokens", headers=hub.headers()).json()
    (only,) = [t for t in tokens if t["role"] == "admin"]
    refused = hub.client.delete(f"/api/v1/tokens/{only['id']}", headers=hub.headers())
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert "last active admin token" in message
    assert "hub token recover" in message
    assert hub.client.get("/api/v1/tokens", headers=hub.headers()).status_code == 200
    audit = hub.client.get(
        "/api/v1/audit", params={"action": "token.revoke"}, headers=hub.headers()
    ).json()
    assert audit[0]["outcome"] == "conflict"
    # With a second admin the first may go; then the second is the last one.
    _, second = _created(hub, name="second", role="admin")
    first = hub.client.delete(f"/api/v1/tokens/{only['id']}", headers=hub.headers())
    assert first.status_code == 204
    other = {"Authorization": f"Bearer {second['token']}"}
    last = hub.client.delete(f"/api/v1/tokens/{second['id']}", headers=other)
    assert last.status_code == 409
    # Non-admin tokens are revoked as before; unknown ids are 404.
    _, viewer = _created(hub, str(second["token"]), name="v", role="viewer")
    assert hub.client.delete(f"/api/v1/tokens/{viewer['id']}", headers=other).status_code == 204
    assert hub.client.delete("/api/v1/tokens/nope", headers=other).status_code == 404


def test_an_expired_admin_does_not_count_as_the_one_left(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    hub = hub_factory()
    store = hub.ctx.store
    admin_id = next(t.id for t in store.tokens.list() if t.role == "admin")
    store.tokens.create(
        name="stale",
        role="admin",
        token_hash="stale-hash",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    with pytest.raises(Conflict, match="last active admin"):
        store.tokens.revoke(admin_id)


def test_last_use_is_recorded_and_listed(hub_factory: Callable[..., InProcessHub]) -> None:
    hub = hub_factory()
    _, viewer = _created(hub, name="reader", role="viewer")
    assert viewer["last_used_at"] is None
    for _ in range(5):  # many requests, at most one write (throttled per token)
        headers = {"Authorization": f"Bearer {viewer['token']}"}
        assert hub.client.get("/api/v1/models", headers=headers).status_code == 200

    def listed() -> dict[str, object]:
        rows = hub.client.get("/api/v1/tokens", headers=hub.headers()).json()
        found: dict[str, object] = next(t for t in rows if t["id"] == viewer["id"])
        return found

    deadline = time.monotonic() + 30
    while listed()["last_used_at"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listed()["last_used_at"] is not None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "200", **(env or {})}
    full.pop("MODELFLEET_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_break_glass_recover_with_the_hub_running_and_stopped(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Every admin token expired (the bootstrap one lived one second): the hub refuses it
    and names the way out; `hub token recover` on the data directory mints a new admin token
    that the running hub accepts at once, and again with the hub stopped; both audited."""
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    root = tmp_path / "hub"
    init = init_hub(root, db=db, admin_ttl="1s")
    hub = HubProcess(root, tls=True).start()
    try:
        while init.admin_expires_at > datetime.now(UTC):
            time.sleep(0.1)
        with (
            HubClient(hub.url, init.admin_token, ca_file=hub.ca_file) as locked_out,
            pytest.raises(Unauthenticated, match=r"expired.*hub token recover"),
        ):
            locked_out.list_tokens()
        result = _cli("hub", "token", "recover", "--data-dir", str(root), "--ttl", "1h", "--json")
        assert result.returncode == 0, result.stderr
        recovered = json.loads(result.stdout)
        assert recovered["role"] == "admin"
        assert recovered["token"].startswith("mf_")
        with HubClient(hub.url, recovered["token"], ca_file=hub.ca_file) as admin:
            listed = {t.id: t for t in admin.list_tokens()}
            assert listed[recovered["id"]].role == "admin"
            expires = listed[recovered["id"]].expires_at
            assert expires is not None
            assert expires <= datetime.now(UTC) + timedelta(hours=1)
            (entry,) = admin.list_audit(action="token.recover")
            assert entry.actor.startswith("local:")
            assert entry.object == recovered["id"]
    finally:
        hub.stop()
    # Stopped hub: recover writes to the store; the restarted hub accepts the token.
    offline = _cli("hub", "token", "recover", "--data-dir", str(root), "--name", "night-shift")
    assert offline.returncode == 0, offline.stderr
    secret = offline.stdout.strip().splitlines()[-1]
    hub = HubProcess(root, tls=True).start()
    try:
        with HubClient(hub.url, secret, ca_file=hub.ca_file) as admin:
            names = [t.name for t in admin.list_tokens()]
            assert "night-shift" in names
            assert len(admin.list_audit(action="token.recover")) == 2
    finally:
        hub.stop()


def test_recover_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    nowhere = _cli("hub", "token", "recover", "--data-dir", str(tmp_path / "none"))
    assert nowhere.returncode == 1
    assert "hub init" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr
    init_hub(tmp_path / "hub")
    bad = _cli("hub", "token", "recover", "--data-dir", str(tmp_path / "hub"), "--ttl", "forever")
    assert bad.returncode == 1
    assert "not a duration" in bad.stderr
    assert "Traceback" not in bad.stderr
