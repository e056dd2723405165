"""A hostile site cannot take over the global model, and crafted envelopes are refused.

Each attack goes through the hub's HTTP API as a site would send it: ten enrolled sites,
nine honest (small, similar deltas) and one claiming 2^40 - 1 examples with a huge delta.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from modelfleet.federation import wire
from modelfleet.federation.specs import ModelSpec
from tests.federation.conftest import fl_fleet as _fleet

HONEST_DELTA = 0.01
HUGE_CLAIM = (1 << 40) - 1


def _round(hub, tokens, spec, job: dict, attacker_delta: float) -> dict:
    """Run round 1 with s0 attacking; the job's status afterwards."""
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()
    url = f"/api/v1/federation/jobs/{job['id']}/rounds/1/updates"
    for site, token in tokens.items():
        hostile = site == "s0"
        body = wire.pack(
            {"attempt": 1, "num_examples": HUGE_CLAIM if hostile else 100, "metrics": {}},
            {"delta": np.full(spec.size(), attacker_delta if hostile else HONEST_DELTA, "f4")},
        )
        posted = hub.client.post(url, content=body, headers=hub.headers(token))
        assert posted.status_code == 200, posted.text
    hub.ctx.federation.advance(job["id"])
    status = hub.client.get(f"/api/v1/federation/jobs/{job['id']}", headers=hub.headers())
    assert status.status_code == 200
    return status.json()


def _global_delta(hub, job_id: str, spec: ModelSpec) -> np.ndarray:
    repo = hub.ctx.federation.repo
    before = wire.unpack_vector(repo.round_weights(job_id, 1))
    after = wire.unpack_vector(repo.job_weights(job_id)[0])
    assert after.shape == (spec.size(),)
    return after.astype(np.float64) - before


def test_one_site_claiming_2_40_examples_cannot_set_the_global_model(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _fleet(hub_factory, tmp_path)
    job = {"model": "iris", "data": "iris", "rounds": 2, "min_sites": 10, "id": "take-over"}
    status = _round(hub, tokens, spec, job, attacker_delta=5.0)
    first = status["round_details"][0]
    assert first["state"] == "closed", first
    assert first["examples_capped"] == {"s0": HUGE_CLAIM}
    honest_norm = HONEST_DELTA * np.sqrt(spec.size())
    assert first["clip_norm"] == pytest.approx(2 * honest_norm, rel=1e-4)
    delta = _global_delta(hub, "take-over", spec)
    # Clipped to twice the honest norm: the attacker cannot move the model further than
    # that in one round, whatever it sends (before: 5.0 per weight, 500x the honest step).
    assert np.linalg.norm(delta) <= 2 * honest_norm * (1 + 1e-4)


def test_a_declared_example_cap_bounds_the_sites_weight(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _fleet(hub_factory, tmp_path, attacker_consent={"max_examples": 100})
    job = {"model": "iris", "data": "iris", "rounds": 2, "min_sites": 10, "id": "capped"}
    _round(hub, tokens, spec, job, attacker_delta=5.0)
    delta = _global_delta(hub, "capped", spec)
    # s0 counts for 100 examples like everyone else; its delta clipped to 2x the honest
    # norm: the mean moves (9 * 0.01 + 0.02) / 10 = 0.011 per weight.
    assert np.allclose(delta, 0.011, atol=1e-6)


def test_an_aggregate_that_overflows_is_never_stored(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _fleet(hub_factory, tmp_path)
    job = {
        "model": "iris",
        "data": "iris",
        "rounds": 1,
        "min_sites": 10,
        "id": "overflow",
        "clip_norm": "off",  # the operator turned the default protection off
        "max_examples_per_site": 1 << 40,
        "max_round_attempts": 1,
    }
    status = _round(hub, tokens, spec, job, attacker_delta=1e27)
    first = status["round_details"][0]
    assert first["state"] == "failed"
    assert "NaN or infinite" in first["reason"]
    assert status["state"] == "failed"
    assert status["result_version"] is None
    versions = hub.client.get("/api/v1/models/iris/versions", headers=hub.headers()).json()
    assert len(versions) == 1  # nothing registered from a poisoned aggregate
    weights = wire.unpack_vector(hub.ctx.federation.repo.job_weights("overflow")[0])
    assert np.isfinite(weights).all()


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "krum"])
def test_robust_strategies_ignore_the_attacker(hub_factory, tmp_path, strategy: str) -> None:
    hub, tokens, spec = _fleet(hub_factory, tmp_path)
    params = {"byzantine": 1} if strategy == "krum" else {}
    job = {
        "model": "iris",
        "data": "iris",
        "rounds": 2,
        "min_sites": 10,
        "id": f"robust-{strategy.replace('_', '-')}",
        "strategy": strategy,
        "strategy_params": params,
        "clip_norm": "off",  # the strategy alone
    }
    _round(hub, tokens, spec, job, attacker_delta=5.0)
    delta = _global_delta(hub, job["id"], spec)
    assert np.allclose(delta, HONEST_DELTA, atol=1e-6), strategy


def _envelope(shape: list[int]) -> bytes:
    header = json.dumps(
        {
            "meta": {"attempt": 1, "num_examples": 10},
            "arrays": [{"name": "delta", "dtype": "float32", "shape": shape}],
        }
    ).encode()
    return wire.MAGIC + struct.pack("<I", len(header)) + header + b"\0" * 16


@pytest.mark.parametrize("shape", [[2**62, 4], [2**70], [-1], [1] * 40, ["3"], [True]])
def test_crafted_tensor_shapes_answer_400(hub_factory, tmp_path, shape: list) -> None:
    hub, tokens, spec = _fleet(hub_factory, tmp_path, sites=1)
    job = {"model": "iris", "data": "iris", "rounds": 1, "min_sites": 1, "id": "shapes"}
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()
    posted = hub.client.post(
        "/api/v1/federation/jobs/shapes/rounds/1/updates",
        content=_envelope(shape),
        headers=hub.headers(tokens["s0"]),
    )
    assert posted.status_code == 400, posted.text
    assert posted.json()["error"]["code"] == "invalid_input"
    # The hub is unharmed: a well-formed update is still taken.
    good = wire.pack(
        {"attempt": 1, "num_examples": 10}, {"delta": np.zeros(spec.size(), np.float32)}
    )
    again = hub.client.post(
        "/api/v1/federation/jobs/shapes/rounds/1/updates",
        content=good,
        headers=hub.headers(tokens["s0"]),
    )
    assert again.status_code == 200, again.text
