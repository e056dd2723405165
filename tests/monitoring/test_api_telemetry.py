"""Telemetry API rules: who may post what, bad input is a 400, reference profiles."""

from __future__ import annotations

import uuid

import numpy as np

from modelfleet.monitoring.profiles import profile_array


def enrolled_site(hub, name: str) -> str:
    created = hub.client.post(
        "/api/v1/sites", json={"name": name, "labels": {}}, headers=hub.headers()
    ).json()
    enrolled = hub.client.post("/api/v1/enroll", json={"token": created["enrollment_token"]})
    return str(enrolled.json()["token"])


def batch(**window: object) -> dict:
    base = {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": 1.7e9, "end": 1.7e9 + 10,
        "requests": 3, "latency": {"4": 3}, "inputs": {}, "outputs": {},
    }  # fmt: skip
    return {"batch_id": uuid.uuid4().hex, "spool_id": "s", "windows": [{**base, **window}]}


def test_only_the_site_itself_posts_its_telemetry(hub_factory) -> None:
    hub = hub_factory()
    eu = enrolled_site(hub, "plant-eu")
    enrolled_site(hub, "plant-us")
    url = "/api/v1/sites/{}/telemetry"
    ok = hub.client.post(url.format("plant-eu"), json=batch(), headers=hub.headers(eu))
    assert ok.status_code == 200
    assert ok.json()["accepted"] == 1
    other = hub.client.post(url.format("plant-us"), json=batch(), headers=hub.headers(eu))
    assert other.status_code == 403
    admin = hub.client.post(url.format("plant-eu"), json=batch(), headers=hub.headers())
    assert admin.status_code == 403
    for bad in (
        batch(requests=-1),
        batch(start=1e12),
        batch(end=1.0),
        batch(latency={"9999": 1}),
        batch(inputs={"X[0]": {"kind": "numeric", "kll": "not base64!"}}),
        batch(model="../etc"),
        {"batch_id": "x y", "spool_id": "s", "windows": []},
    ):
        response = hub.client.post(url.format("plant-eu"), json=bad, headers=hub.headers(eu))
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] in {"invalid_input", "invalid_name"}
    metrics = hub.client.get("/metrics", headers=hub.headers()).text
    assert 'modelfleet_site_requests{model="pump",site="plant-eu",version="1"} 3.0' in metrics
    assert 'modelfleet_site_online{site="plant-us"} 0.0' in metrics


def test_reference_profile_upload_needs_an_operator(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    with tiny_onnx().open("rb") as fh:
        pushed = hub.client.post(
            "/api/v1/models/pump/versions", content=fh.read(), headers=hub.headers()
        )
    assert pushed.status_code == 201, pushed.text
    profile = profile_array(np.random.default_rng(1).normal(size=(500, 4))).to_dict()
    url = "/api/v1/models/pump/versions/1/reference-profile"
    viewer = hub.token("viewer")
    assert hub.client.put(url, json=profile, headers=hub.headers(viewer)).status_code == 403
    stored = hub.client.put(url, json=profile, headers=hub.headers(hub.token("operator")))
    assert stored.status_code == 200, stored.text
    assert sorted(stored.json()["columns"]) == ["X[0]", "X[1]", "X[2]", "X[3]"]
    assert hub.client.get(url, headers=hub.headers(viewer)).status_code == 200
    missing = hub.client.put(
        "/api/v1/models/pump/versions/9/reference-profile", json=profile, headers=hub.headers()
    )
    assert missing.status_code == 404
    bad = hub.client.put(url, json={"columns": {"a": {"kind": "?"}}}, headers=hub.headers())
    assert bad.status_code == 400
    thresholds = hub.client.put(
        "/api/v1/models/pump/drift-thresholds", json={"psi": 0.2}, headers=hub.headers()
    )
    assert thresholds.json()["thresholds"]["psi"] == 0.2
    wrong = hub.client.put(
        "/api/v1/models/pump/drift-thresholds", json={"nope": 1}, headers=hub.headers()
    )
    assert wrong.status_code == 400


def test_retention_folds_old_windows_and_status_totals_stay(hub_factory) -> None:
    hub = hub_factory(telemetry_retention_days=30)
    eu = enrolled_site(hub, "plant-eu")
    url = "/api/v1/sites/plant-eu/telemetry"
    for requests in (3, 4):  # windows from 2023: long past retention
        posted = hub.client.post(url, json=batch(requests=requests), headers=hub.headers(eu))
        assert posted.status_code == 200

    def totals() -> list[tuple[str, int, int]]:
        status = hub.client.get("/api/v1/telemetry/status", headers=hub.headers()).json()
        return [
            (m["model"], m["requests_total"], m["windows"])
            for site in status["sites"]
            for m in site["models"]
        ]

    assert totals() == [("pump", 7, 2)]
    assert hub.ctx.retention is not None
    assert hub.ctx.retention.compact_now() == 2
    assert hub.ctx.telemetry.repo.windows() == []
    assert totals() == [("pump", 7, 2)]  # exact, from the roll-up
