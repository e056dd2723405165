"""A site's heartbeat is the site's word: bounded, and it cannot put models of its own
choosing in the routing directory."""

from __future__ import annotations


def _site(hub, name: str = "plant-eu") -> dict[str, str]:
    _, secret = hub.ctx.sites.add(name, {"region": "eu-west"})
    return hub.headers(hub.ctx.sites.enroll(secret).token)


def test_a_site_cannot_advertise_a_model_it_was_not_assigned(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    hub.client.post(
        "/api/v1/models/pump/versions", content=tiny_onnx().read_bytes(), headers=hub.headers()
    ).raise_for_status()
    site = _site(hub)
    report = {
        "url": "http://127.0.0.1:18801",
        "models": [
            {"name": "pump", "active_version": 1, "state": "ready"},
            {"name": "secret-model", "active_version": 7, "state": "ready"},
        ],
    }
    assert (
        hub.client.post("/api/v1/sites/plant-eu/report", json=report, headers=site).status_code
        == 204
    )
    listed = hub.client.get("/api/v1/directory", headers=hub.headers()).json()["sites"]
    assert listed[0]["models"] == []  # neither was assigned
    hub.client.post(
        "/api/v1/sites/plant-eu/assignments", json={"ref": "pump:1"}, headers=hub.headers()
    ).raise_for_status()
    listed = hub.client.get("/api/v1/directory", headers=hub.headers()).json()["sites"]
    assert [m["name"] for m in listed[0]["models"]] == ["pump"]


def test_reports_are_bounded(hub_factory) -> None:
    hub = hub_factory()
    site = _site(hub)
    url = "/api/v1/sites/plant-eu/report"
    huge = {"models": [], "padding": "x" * (1024 * 1024)}
    assert hub.client.post(url, json=huge, headers=site).status_code == 413
    for bad in (
        {"models": [{"name": "m"}] * 2000},
        {"url": "javascript:alert(1)"},
        {"applied_revision": 2**80},
        {"models": [{"name": "m\n"}]},
        {"models": [{"name": "m", "error": {"code": "x", "message": "y" * 5000}}]},
    ):
        response = hub.client.post(url, json=bad, headers=site)
        assert response.status_code == 400, (bad, response.text)
    # Unknown fields are dropped, not stored.
    assert hub.client.post(url, json={"extra": "x" * 100}, headers=site).status_code == 204
    assert "extra" not in hub.ctx.sites.get("plant-eu").report


def test_serving_parameters_are_checked_where_they_are_written(hub_factory, tiny_onnx) -> None:
    """One bad parameter once stalled every model on a site; the hub now refuses it with
    the key named (assignments and deployments alike)."""
    hub = hub_factory()
    hub.client.post(
        "/api/v1/models/pump/versions", content=tiny_onnx().read_bytes(), headers=hub.headers()
    ).raise_for_status()
    hub.ctx.sites.add("plant-eu", {"region": "eu-west"})
    url = "/api/v1/sites/plant-eu/assignments"
    for params, fragment in [
        ({"intra_op_threads": "four"}, "intra_op_threads must be an integer"),
        ({"intra_op_threads": 0}, "intra_op_threads must be an integer in [1, 256]"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"max_batch": 8}, "unknown parameter 'max_batch'"),
        ({"max_batch_time_ms": True}, "max_batch_time_ms must be a number"),
    ]:
        answer = hub.client.post(
            url, json={"ref": "pump:1", "params": params}, headers=hub.headers()
        )
        assert answer.status_code == 400, (params, answer.text)
        assert fragment in answer.json()["error"]["message"], answer.text
    ok = hub.client.post(
        url,
        json={"ref": "pump:1", "params": {"max_batch_size": 32, "intra_op_threads": 2}},
        headers=hub.headers(),
    )
    assert ok.status_code in (200, 201), ok.text
    deploy = hub.client.post(
        "/api/v1/deployments",
        json={"ref": "pump:1", "params": {"intra_op_threads": "four"}},
        headers=hub.headers(),
    )
    assert deploy.status_code == 400, deploy.text
    assert "intra_op_threads" in deploy.json()["error"]["message"]
