"""``modelfleet apply`` with ``pipelines:`` and ``schedules:``: the fleet file of
docs/pipelines.md applied exactly as the page shows it (dry run, apply, apply again), a
schedule naming an unknown pipeline marked in the dry run, and the prune rule (a kind is
pruned only when the file has its section)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.hub.pipeline_support import doc_fleet_file, weak_model


@pytest.fixture
def hub(hub_factory, tmp_path: Path):
    """The doc's world: model machine-health (v1 = production), plant-a and plant-b
    (role=train) and plant-c (role=holdout), reporting."""
    made = hub_factory(schedule_interval_s=60)
    made.client.post(
        "/api/v1/models/machine-health/versions",
        params={"alias": "production"},
        content=weak_model(tmp_path / "v1.onnx").read_bytes(),
        headers=made.headers(),
    ).raise_for_status()
    for name, role in (("plant-a", "train"), ("plant-b", "train"), ("plant-c", "holdout")):
        _, secret = made.ctx.sites.add(name, {"role": role})
        token = made.ctx.sites.enroll(secret).token
        made.client.post(
            f"/api/v1/sites/{name}/report", json={}, headers=made.headers(token)
        ).raise_for_status()
    return made


def apply(hub, doc: dict[str, Any], **flags: bool) -> dict[str, Any]:
    body = {"doc": doc, "prune": False, "dry_run": False, **flags}
    answer = hub.client.post("/api/v1/apply", json=body, headers=hub.headers())
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def changes(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((c["kind"], c["name"], c["action"]) for c in result["changes"])


def get(hub, path: str) -> Any:
    answer = hub.client.get(path, headers=hub.headers())
    assert answer.status_code == 200, answer.text
    return answer.json()


CREATED = [
    ("deployment", "machine-health", "create"),
    ("pipeline", "machine-health-weekly", "create"),
    ("schedule", "weekly-retrain", "create"),
]


def test_the_docs_fleet_file_applies_as_shown_and_twice_changes_nothing(hub) -> None:
    doc = doc_fleet_file()
    planned = apply(hub, doc, dry_run=True)
    assert changes(planned) == CREATED
    assert get(hub, "/api/v1/pipelines") == []  # a dry run changes nothing
    assert changes(apply(hub, doc)) == CREATED

    pipeline = get(hub, "/api/v1/pipelines/machine-health-weekly")
    assert pipeline["train"] == doc["pipelines"][0]["train"]
    assert pipeline["evaluate"]["margin"] == 0.02
    assert (pipeline["candidate_alias"], pipeline["promote_alias"]) == ("candidate", "production")
    schedule = get(hub, "/api/v1/schedules/weekly-retrain")
    assert schedule["action"] == {"kind": "pipeline", "pipeline": "machine-health-weekly"}
    assert schedule["timezone"] == "Europe/Berlin"
    deployment = get(hub, "/api/v1/deployments/machine-health")
    assert deployment["follow"] is not None

    again = apply(hub, doc)
    assert again["changes"] == []
    assert again["changed"] is False

    changed = copy.deepcopy(doc)
    changed["pipelines"][0]["evaluate"]["margin"] = 0.05
    changed["schedules"][0]["cron"] = "0 4 * * MON"
    assert changes(apply(hub, changed)) == [
        ("pipeline", "machine-health-weekly", "update"),
        ("schedule", "weekly-retrain", "update"),
    ]
    assert get(hub, "/api/v1/pipelines/machine-health-weekly")["evaluate"]["margin"] == 0.05


def test_a_schedule_of_an_unknown_pipeline_is_marked_in_the_dry_run(hub) -> None:
    doc = doc_fleet_file()
    del doc["pipelines"]
    planned = apply(hub, doc, dry_run=True)
    line = next(c for c in planned["changes"] if c["kind"] == "schedule")
    assert "would be refused: unknown pipeline 'machine-health-weekly'" in line["detail"]
    refused = hub.client.post(
        "/api/v1/apply", json={"doc": doc, "prune": False, "dry_run": False}, headers=hub.headers()
    )
    assert refused.status_code == 400
    assert "unknown pipeline in the action" in refused.json()["error"]["message"]


def test_prune_removes_pipelines_and_schedules_only_when_their_section_is_there(hub) -> None:
    doc = doc_fleet_file()
    apply(hub, doc)
    sites = [
        {"name": n, "labels": {"role": r}}
        for n, r in (("plant-a", "train"), ("plant-b", "train"), ("plant-c", "holdout"))
    ]
    # A fleet file from before pipelines: its sites and deployments, no such sections.
    without = {"sites": sites, "deployments": doc["deployments"]}
    assert apply(hub, without, prune=True)["changes"] == []
    assert len(get(hub, "/api/v1/schedules")) == 1
    emptied = {**without, "pipelines": [], "schedules": []}
    assert changes(apply(hub, emptied, prune=True)) == [
        ("pipeline", "machine-health-weekly", "delete"),
        ("schedule", "weekly-retrain", "delete"),
    ]
    assert get(hub, "/api/v1/pipelines") == []
    assert get(hub, "/api/v1/schedules") == []


def test_bad_sections_are_refused_before_any_change(hub) -> None:
    doc = doc_fleet_file()
    doc["schedules"][0]["cron"] = "61 * * * *"
    refused = hub.client.post(
        "/api/v1/apply", json={"doc": doc, "prune": False, "dry_run": False}, headers=hub.headers()
    )
    assert refused.status_code == 400
    assert "does not parse" in refused.json()["error"]["message"]
    assert get(hub, "/api/v1/pipelines") == []  # validated before the first change
    doc = doc_fleet_file()
    doc["pipelines"][0]["evaluate"]["margin"] = -1
    refused = hub.client.post(
        "/api/v1/apply", json={"doc": doc, "prune": False, "dry_run": False}, headers=hub.headers()
    )
    assert refused.status_code == 400
    assert "margin" in refused.json()["error"]["message"]
