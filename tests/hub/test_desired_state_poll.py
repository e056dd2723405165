"""The desired-state long-poll: changes made here wake it; changes made elsewhere are found
by its periodic re-check, which every waiting site shares."""

from __future__ import annotations

import json
import re
import time

import pytest

from modelfleet.errors import NotFound
from modelfleet.hub import sites as sites_module


def test_poll_sees_changes_made_through_another_replica(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    for _ in range(2):
        hub.client.post(
            "/api/v1/models/pump/versions", content=tiny_onnx().read_bytes(), headers=hub.headers()
        ).raise_for_status()
    _, secret = hub.ctx.sites.add("plant-a", {"region": "eu-west"})
    headers = hub.headers(hub.ctx.sites.enroll(secret).token)
    url = "/api/v1/sites/plant-a/desired-state"
    first = hub.client.get(url, headers=headers)
    assert first.status_code == 200
    etag = first.headers["etag"]

    # Unchanged: the poll holds, then answers 304 with the same ETag.
    unchanged = hub.client.get(
        url, params={"wait": 1.2}, headers={**headers, "If-None-Match": etag}
    )
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == etag

    # A change written straight to the store, as another hub replica would: no wake-up
    # here, so only the shared periodic re-check can find it within the wait.
    hub.ctx.store.assignments.set("plant-a", "pump", 2, "pump:2", {})
    changed = hub.client.get(url, params={"wait": 10}, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    signed = json.loads(changed.json()["signed"]["text"])
    assert [m["version"] for m in signed["models"]] == [2]


def test_recent_revisions_come_from_one_shared_read(hub_factory, monkeypatch) -> None:
    hub = hub_factory()
    sites = hub.ctx.sites
    sites.add("a", {})
    sites.add("b", {})
    reads = []
    bulk = hub.ctx.store.assignments.all_revisions
    monkeypatch.setattr(
        hub.ctx.store.assignments, "all_revisions", lambda: reads.append(1) or bulk()
    )
    monkeypatch.setattr(sites_module, "REVISIONS_MAX_AGE_S", 60.0)
    assert sites.known_revision("a") is None  # nothing read yet
    assert sites.revision("a", recent=True) == sites.revision("a")
    assert sites.revision("b", recent=True) == sites.revision("b")
    assert sites.known_revision("b") == sites.revision("b")
    assert len(reads) == 1  # one table-wide read served both sites
    with pytest.raises(NotFound):
        sites.revision("nowhere", recent=True)
    monkeypatch.setattr(sites_module, "REVISIONS_MAX_AGE_S", 0.01)
    time.sleep(0.05)
    assert sites.known_revision("a") is None  # too old to serve
    sites.revision("a", recent=True)
    assert len(reads) == 3  # re-read: once for "nowhere" (not in the table), once now


def test_grants_travel_in_the_desired_state_and_token_changes_wake_the_poll(
    hub_factory,
) -> None:
    import threading
    from datetime import UTC, datetime, timedelta

    from modelfleet.grants import GrantList
    from modelfleet.registry.keyset import KeySet

    hub = hub_factory()
    _, secret = hub.ctx.sites.add("plant-a", {"jurisdiction": "EU"})
    headers = hub.headers(hub.ctx.sites.enroll(secret).token)
    url = "/api/v1/sites/plant-a/desired-state"
    keys = KeySet.from_dict(
        {"revision": 0, "keys": {hub.ctx.registry.key_id: hub.ctx.registry.public_key}}
    )

    def verified(doc: dict) -> GrantList:
        grants = doc["grants"]
        old = datetime.now(UTC) - timedelta(hours=1)
        return GrantList.verify(
            grants["text"], grants["signature"], keys, holder="plant-a", newer_than=old
        )

    class held:  # noqa: N801 - reads like the function it replaces
        """The grants that may call models here (refusals, such as the admin token's, aside)."""

        def __init__(self, doc: dict) -> None:
            listed = verified(doc).by_hash
            self.by_hash = {h: g for h, g in listed.items() if g.refusal is None}
            self.refused = {g.name for g in listed.values() if g.refusal is not None}

    first = hub.client.get(url, headers=headers)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"r\d+k\d+g[0-9a-f]{12}"', etag), etag
    assert held(first.json()).by_hash == {}
    assert held(first.json()).refused == {"admin"}  # the hub init token: refused here

    def create(body: dict) -> None:
        time.sleep(0.3)  # while the poll below waits
        hub.client.post("/api/v1/tokens", json=body, headers=hub.headers()).raise_for_status()

    maker = threading.Thread(target=create, args=({"name": "app", "role": "infer"},))
    maker.start()
    woken = hub.client.get(url, params={"wait": 20}, headers={**headers, "If-None-Match": etag})
    maker.join()
    assert woken.status_code == 200
    assert woken.headers["etag"] != etag
    assert [g.name for g in held(woken.json()).by_hash.values()] == ["app"]

    # A token for other sites changes the fingerprint but is not in this site's list.
    create({"name": "us", "role": "infer", "site_selector": "jurisdiction=US"})
    later = hub.client.get(url, headers=headers)
    assert later.headers["etag"] != woken.headers["etag"]
    assert [g.name for g in held(later.json()).by_hash.values()] == ["app"]
    assert "us" in held(later.json()).refused  # known here, with no rights: a 403
    # Relabelled to US: a new revision, and the US token is in its list.
    hub.client.put(
        "/api/v1/sites/plant-a/labels", json={"labels": {"jurisdiction": "US"}},
        headers=hub.headers(),
    ).raise_for_status()  # fmt: skip
    relabelled = hub.client.get(url, headers=headers)
    assert sorted(g.name for g in held(relabelled.json()).by_hash.values()) == ["app", "us"]
