"""``model.alias_moved`` / ``model.alias_removed`` come from the registry, so every alias
change is told — the API's, a push with ``--alias``, and hub code calling the registry
(a pipeline, a schedule's action) — while the API keeps its audit entries."""

from __future__ import annotations

from typing import Any

from tests.conftest import InProcessHub
from tests.hub.test_api_models import push


def alias_events(hub: InProcessHub) -> list[tuple[str, str, dict[str, Any]]]:
    got = hub.client.get("/api/v1/events", params={"type": "model.*"}, headers=hub.headers())
    assert got.status_code == 200, got.text
    return [
        (e["type"], e["subject"], e["payload"])
        for e in got.json()
        if e["type"] != "model.registered"
    ]


def test_api_moves_and_removal_are_told_once_each_and_audited(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    # Two different files: the same bytes again would be the retry of version 1.
    assert push(hub, "pump", tiny_onnx(), alias="production").status_code == 201
    assert push(hub, "pump", tiny_onnx()).status_code == 201
    url = "/api/v1/models/pump/aliases/production"
    assert hub.client.put(url, json={"version": 2}, headers=hub.headers()).status_code == 200
    # Pointing it where it already points is no move: nothing told.
    assert hub.client.put(url, json={"version": 2}, headers=hub.headers()).status_code == 200
    assert hub.client.delete(url, headers=hub.headers()).status_code == 204

    by = "admin:admin"
    assert alias_events(hub) == [
        (
            "model.alias_moved",
            "pump@production",
            {"model": "pump", "alias": "production", "from_version": None, "to_version": 1,
             "by": by},
        ),
        (
            "model.alias_moved",
            "pump@production",
            {"model": "pump", "alias": "production", "from_version": 1, "to_version": 2,
             "by": by},
        ),
        (
            "model.alias_removed",
            "pump@production",
            {"model": "pump", "alias": "production", "from_version": 2, "by": by},
        ),
    ]  # fmt: skip
    audit = hub.client.get("/api/v1/audit", headers=hub.headers()).json()
    actions = [(a["action"], a["object"]) for a in audit]
    assert actions.count(("model.alias", "pump@production")) == 2
    assert ("model.unalias", "pump@production") in actions


def test_hub_code_moving_an_alias_through_the_registry_is_told(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    # Two different files: the same bytes again would be the retry of version 1.
    assert push(hub, "pump", tiny_onnx()).status_code == 201
    assert push(hub, "pump", tiny_onnx()).status_code == 201
    hub.ctx.registry.set_alias("pump", "candidate", 2, actor="pipeline:weekly")
    hub.ctx.registry.set_alias("pump", "candidate", 1)  # no actor named: the hub's own
    hub.ctx.registry.delete_alias("pump", "candidate", actor="pipeline:weekly")
    assert [(t, p.get("to_version"), p["by"]) for t, _, p in alias_events(hub)] == [
        ("model.alias_moved", 2, "pipeline:weekly"),
        ("model.alias_moved", 1, "hub"),
        ("model.alias_removed", None, "pipeline:weekly"),
    ]
