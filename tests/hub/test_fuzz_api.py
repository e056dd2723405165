"""The hub answers generated input with 2xx or 4xx, never a 500: every operation of its own
OpenAPI document, fuzzed with Schemathesis (Hypothesis strategies from the schema).

The run is derandomized so CI is deterministic, and kept to 15 examples per operation (there
are over a hundred operations: this file is the suite's longest); for a deeper, random search::

    MODELFLEET_FUZZ_EXAMPLES=500 MODELFLEET_FUZZ_RANDOM=1 pytest tests/hub/test_fuzz_api.py

A failure lists each operation with the first input that broke it.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import Phase, given

from tests.fuzzing import fuzz_settings


@pytest.fixture
def seeded_hub(hub_factory, tiny_onnx):
    """A hub with something in it, so generated input reaches past "not found": a model
    with two versions, a site, a deployment target."""
    hub = hub_factory()
    for _ in range(2):
        pushed = hub.client.post(
            "/api/v1/models/pump/versions",
            content=tiny_onnx().read_bytes(),
            headers=hub.headers(),
        )
        assert pushed.status_code == 201, pushed.text
    created = hub.client.post(
        "/api/v1/sites",
        json={"name": "plant-eu", "labels": {"region": "eu-west"}},
        headers=hub.headers(),
    )
    assert created.status_code == 201, created.text
    return hub


def test_no_operation_answers_500_to_generated_input(seeded_hub) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", seeded_hub.client.app)
    auth = {"Authorization": f"Bearer {seeded_hub.admin_token}"}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # the document really lists the API

    for operation in operations:
        _fuzz(operation, auth, failures)

    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


def _fuzz(operation, auth: dict[str, str], failures: dict[str, str]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @fuzz_settings(15, phases=[Phase.explicit, Phase.generate])
    @given(operation.as_strategy())
    def check(case) -> None:
        try:
            response = case.call(headers=auth)
        except Exception as exc:  # an unhandled error is the finding
            failures.setdefault(label, f"{type(exc).__name__}: {exc} for {case.path}")
            return
        if response.status_code >= 500:
            failures.setdefault(
                label,
                f"{response.status_code} {response.text[:200]} for "
                f"{case.path_parameters} {case.query} {str(case.body)[:200]}",
            )

    check()


BIG = 425408499138611744222478336  # beyond 64 bits


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/v1/models/pump/versions/{BIG}", None),
        ("GET", f"/api/v1/telemetry/drift/pump?version={BIG}", None),
        ("GET", f"/api/v1/federation/jobs/j1/rounds/{BIG}/weights", None),
        ("GET", f"/api/v1/models/pump/versions/{BIG}/reference-profile", None),
        ("GET", f"/api/v1/models/pump/versions?parent={BIG}", None),
        ("POST", "/api/v1/sites", {"name": "plant-x", "labels": {}, "enrollment_ttl_s": 1.27e308}),
        ("POST", "/api/v1/tokens", {"name": "t", "role": "viewer", "ttl": 4.95e307}),
    ],
)
def test_numbers_beyond_the_schema_bounds_answer_4xx(seeded_hub, method, path, body) -> None:
    """The inputs a 150 s fuzzing run once found 500s with, kept as regressions."""
    response = seeded_hub.client.request(method, path, json=body, headers=seeded_hub.headers())
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
