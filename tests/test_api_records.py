"""The wire records: forward compatible, read like the JSON they came from, and documented
in the hub's OpenAPI schema for every answer HubClient parses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from modelfleet.api import FederatedJob, Model, Site
from tests.conftest import InProcessHub

MODEL = {
    "name": "pump",
    "created_at": "2026-01-01T00:00:00Z",
    "latest_version": 2,
    "version_count": 2,
    "aliases": {"production": 1},
}


def test_a_record_keeps_fields_a_newer_hub_adds() -> None:
    model = Model.model_validate({**MODEL, "owner": "team-a"})
    assert model.latest_version == 2
    assert model["owner"] == "team-a"
    assert model.model_dump(mode="json", exclude_unset=True) == {**MODEL, "owner": "team-a"}


def test_mapping_access_sees_only_what_the_answer_carried() -> None:
    job = FederatedJob.model_validate(
        {
            "id": "j1",
            "model": "pump",
            "base_version": 1,
            "state": "running",
            "message": "",
            "round": 1,
            "rounds": 3,
            "strategy": "fedavg",
            "selector": "(all sites)",
            "data": "maintenance",
            "min_sites": 2,
            "result_version": None,
            "created_by": "admin",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "finished_at": None,
            "sites": {},
            "spec": {},
            "config": {},
        }
    )
    assert job["result_version"] is None
    assert job.get("round_details", []) == []  # listed without rounds: absent, not None
    with pytest.raises(KeyError):
        job["round_details"]


def test_a_record_missing_documented_fields_is_refused() -> None:
    with pytest.raises(ValidationError, match="online"):
        Site.model_validate({"name": "plant-eu"})


OPERATOR_ROUTES = [
    ("get", "/api/v1/models"),
    ("get", "/api/v1/models/{name}"),
    ("get", "/api/v1/resolve/{ref}"),
    ("get", "/api/v1/sites"),
    ("get", "/api/v1/sites/{name}"),
    ("post", "/api/v1/sites"),
    ("get", "/api/v1/tokens"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/deployments"),
    ("post", "/api/v1/deployments/plan"),
    ("get", "/api/v1/overrides"),
    ("get", "/api/v1/policies"),
    ("get", "/api/v1/rollouts/{rollout_id}"),
    ("get", "/api/v1/controller"),
    ("post", "/api/v1/apply"),
    ("get", "/api/v1/telemetry/status"),
    ("get", "/api/v1/telemetry/drift/{model}"),
    ("get", "/api/v1/models/{name}/drift-thresholds"),
    ("get", "/api/v1/federation/jobs/{job_id}"),
    ("get", "/api/v1/federation/consent"),
]


def test_openapi_documents_every_answer_the_sdk_parses(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    schema = hub_factory().client.get("/openapi.json").json()
    for method, path in OPERATOR_ROUTES:
        responses = schema["paths"][path][method]["responses"]
        ok = next(v for k, v in responses.items() if k.startswith("2"))
        body = ok["content"]["application/json"]["schema"]
        documented = (
            body.get("$ref")
            or body.get("items", {}).get("$ref")
            or body.get("additionalProperties")
        )
        assert documented, f"{method.upper()} {path} answers an undocumented object"
