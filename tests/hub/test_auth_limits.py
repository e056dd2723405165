"""Failed authentication is limited per address; the audit log stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

WRONG = {"Authorization": "Bearer mf_not-a-token"}


def test_a_guessing_loop_gets_429_and_known_tokens_still_work(hub_factory) -> None:
    hub = hub_factory(auth_failures_per_minute=5, audited_failures_per_minute=2)
    hub.client.get("/api/v1/models", headers=hub.headers()).raise_for_status()  # vouched for
    statuses = [
        hub.client.get("/api/v1/models", headers={"Authorization": f"Bearer mf_guess{i}"})
        for i in range(8)
    ]
    assert [r.status_code for r in statuses] == [401] * 5 + [429] * 3
    assert statuses[-1].json()["error"]["code"] == "rate_limited"
    assert int(statuses[-1].headers["retry-after"]) >= 1
    # The operator behind the same address keeps working with a token that authenticated
    # here before; a token never seen from here does not get a lookup.
    viewer = hub.client.post(
        "/api/v1/tokens", json={"name": "v", "role": "viewer"}, headers=hub.headers()
    ).json()["token"]
    assert hub.client.get("/api/v1/models", headers=hub.headers(viewer)).status_code == 429
    assert hub.client.get("/api/v1/models", headers=hub.headers()).status_code == 200
    assert hub.ctx.limiter.refused == 4


def test_anonymous_enrollment_failures_are_limited_and_sampled_in_the_audit(hub_factory) -> None:
    hub = hub_factory(auth_failures_per_minute=5, audited_failures_per_minute=2)
    hub.client.get("/api/v1/audit", headers=hub.headers()).raise_for_status()  # vouched for
    answers = [
        hub.client.post("/api/v1/enroll", json={"token": f"mfe_wrong{i}"}).status_code
        for i in range(7)
    ]
    assert answers[:5] == [answers[0]] * 5
    assert answers[0] in (400, 401, 404)
    assert answers[5:] == [429, 429]
    audit = hub.client.get(
        "/api/v1/audit", params={"action": "site.enroll"}, headers=hub.headers()
    ).json()
    assert len(audit) == 2  # the first two failures of the minute, not all five
    assert audit[0]["actor"].startswith("anonymous@")
    assert hub.ctx.limiter.unaudited == 3


def test_the_fast_path_refuses_a_guessing_loop_too(hub_factory) -> None:
    hub = hub_factory(auth_failures_per_minute=3)
    url = "/api/v1/federation/sites/plant-eu/tasks"
    statuses = [hub.client.get(url, headers=WRONG).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


def test_old_audit_entries_are_pruned_by_retention(hub_factory) -> None:
    hub = hub_factory(audit_retention_days=30)
    hub.client.post(
        "/api/v1/tokens", json={"name": "t", "role": "viewer"}, headers=hub.headers()
    ).raise_for_status()
    assert hub.client.get("/api/v1/audit", headers=hub.headers()).json()
    # Retention run as if 31 days had passed: everything so far is past it.
    hub.ctx.retention.compact_now(datetime.now(UTC) + timedelta(days=31))
    assert hub.client.get("/api/v1/audit", headers=hub.headers()).json() == []
