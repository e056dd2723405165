"""The federation API in process: who sees which task, refusals, bad input, abort."""

from __future__ import annotations

import numpy as np
import onnx

from modelfleet.federation import wire
from modelfleet.federation.specs import flatten, init_weights, read_onnx
from modelfleet.refs import parse_ref
from tests.federation.conftest import fl_hub


def _setup(hub_factory, tmp_path, **settings):
    consents = {
        "a": {"participate": True, "datasets": ["iris"]},
        "b": {"participate": True, "datasets": ["iris"]},
        "c": {"participate": False, "reason": "not this quarter", "datasets": ["iris"]},
        "d": {"participate": True, "datasets": ["other"]},
    }
    return fl_hub(hub_factory, tmp_path, consents, **settings)


def test_tasks_consent_updates_and_abort(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _setup(hub_factory, tmp_path)
    job = {"model": "iris", "data": "iris", "rounds": 3, "min_sites": 2, "id": "j1"}
    created = hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers())
    assert created.status_code == 201, created.text
    sites = created.json()["sites"]
    assert sites["c"] == {
        "status": "refused",
        "reason": "site config refuses federated jobs: not this quarter",
    }
    assert sites["d"]["status"] == "refused"
    assert "no data set 'iris'" in sites["d"]["reason"]
    # Idempotent with an id; a different body under the same id conflicts.
    assert (
        hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).status_code
        == 201
    )
    other = hub.client.post(
        "/api/v1/federation/jobs", json={**job, "rounds": 4}, headers=hub.headers()
    )
    assert other.status_code == 409

    def tasks(site: str, as_site: str | None = None):
        return hub.client.get(
            f"/api/v1/federation/sites/{site}/tasks", headers=hub.headers(tokens[as_site or site])
        )

    assert [t["round"] for t in tasks("a").json()["tasks"]] == [1]
    assert tasks("c").json()["tasks"] == []  # never sent a task
    assert tasks("b", as_site="a").status_code == 403
    assert (
        hub.client.get("/api/v1/federation/sites/a/tasks", headers=hub.headers()).status_code == 403
    )

    task = tasks("a").json()["tasks"][0]
    h = hub.headers(tokens["a"])
    weights = hub.client.get(task["weights_url"], headers=h)
    _, arrays = wire.unpack(weights.content)
    assert arrays["weights"].shape == (spec.size(),)
    assert hub.client.get(task["weights_url"], headers=hub.headers(tokens["c"])).status_code == 404

    bad = hub.client.post(task["update_url"], content=b"\x80pickle", headers=h)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_input"
    wrong = wire.pack({"attempt": 1, "num_examples": 3}, {"delta": np.zeros(2, np.float32)})
    assert hub.client.post(task["update_url"], content=wrong, headers=h).status_code == 400
    good = wire.pack(
        {"attempt": 1, "num_examples": 10, "metrics": {"train_loss": 0.5}},
        {"delta": np.full(spec.size(), 0.1, np.float32)},
    )
    assert hub.client.post(task["update_url"], content=good, headers=h).status_code == 200
    assert (
        hub.client.post(task["update_url"], content=good, headers=hub.headers()).status_code == 403
    )
    assert tasks("a").json()["tasks"] == []  # answered: no task until the next round

    refusal = {"attempt": 1, "reason": "max rounds per day reached"}
    b = hub.headers(tokens["b"])
    assert hub.client.post(task["refusal_url"], json=refusal, headers=b).status_code == 200
    hub.ctx.federation.advance("j1")
    status = hub.client.get("/api/v1/federation/jobs/j1", headers=hub.headers()).json()
    first = status["round_details"][0]
    # Round 1 had 1 update and 1 refusal with min_sites=2: attempt failed, reopened.
    assert first["attempt"] == 2
    assert first["state"] == "open"

    late = hub.client.post(task["update_url"], content=good, headers=h)
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "round_closed"

    listed = hub.client.get("/api/v1/federation/jobs", headers=hub.headers()).json()
    assert [j["id"] for j in listed] == ["j1"]
    aborted = hub.client.post("/api/v1/federation/jobs/j1/abort", json={}, headers=hub.headers())
    assert aborted.json()["state"] == "aborted"
    assert tasks("a").json()["tasks"] == []
    assert (
        hub.client.post("/api/v1/federation/jobs/j1/abort", headers=hub.headers()).status_code
        == 409
    )


def test_a_decommissioned_site_takes_no_part_in_a_job(hub_factory, tmp_path) -> None:
    """Decommissioned means it serves nothing; a job must not put it back to work."""
    hub, tokens, _ = _setup(hub_factory, tmp_path)
    retired = hub.client.post("/api/v1/sites/a/decommission", headers=hub.headers())
    assert retired.status_code == 200, retired.text
    job = {"model": "iris", "data": "iris", "rounds": 1, "min_sites": 1, "id": "j-dec"}
    created = hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers())
    assert created.status_code == 201, created.text
    sites = created.json()["sites"]
    assert sites["a"] == {"status": "excluded", "reason": "decommissioned"}
    assert sites["b"]["status"] == "eligible"
    tasks = hub.client.get("/api/v1/federation/sites/a/tasks", headers=hub.headers(tokens["a"]))
    assert tasks.json()["tasks"] == []


def test_an_update_post_carries_the_sites_next_task(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _setup(hub_factory, tmp_path, max_body_bytes=64 * 1024)
    job = {"model": "iris", "data": "iris", "rounds": 3, "min_sites": 2, "id": "j2"}
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()
    task = hub.client.get(
        "/api/v1/federation/sites/a/tasks", headers=hub.headers(tokens["a"])
    ).json()["tasks"][0]
    update = wire.pack(
        {"attempt": 1, "num_examples": 10, "metrics": {}},
        {"delta": np.full(spec.size(), 0.1, np.float32)},
    )

    def post(site: str, query: str = "", body: bytes = update, **headers: str):
        return hub.client.post(
            task["update_url"] + query,
            content=body,
            headers={**hub.headers(tokens[site]), **headers},
        )

    first = post("a")
    assert first.status_code == 200
    assert "tasks" not in first.json()  # no wait asked: a plain acknowledgement
    # The last update closes round 1 before answering, so the answer carries round 2.
    last = post("b", "?wait=5")
    assert last.status_code == 200, last.text
    assert last.json()["round_complete"]
    assert [(t["job"], t["round"]) for t in last.json()["tasks"]] == [("j2", 2)]
    # Aggregated updates are dropped with the round's close; counts and metrics stay.
    repo = hub.ctx.federation.repo
    assert list(repo.iter_payloads("j2", 1)) == []
    assert [u.num_examples for u in repo.list_updates("j2", 1)] == [10, 10]
    metrics = hub.client.get("/metrics", headers=hub.headers()).text
    assert (
        'modelfleet_hub_requests_total{method="POST",'
        'route="/api/v1/federation/jobs/{job_id}/rounds/{number}/updates",status="200"} 2.0'
    ) in metrics

    for query, fragment in [("?wait=soon", "not a number"), ("?wait=500", "between 0 and")]:
        bad = post("a", query)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_input"
        assert fragment in bad.json()["error"]["message"]
    anonymous = hub.client.post(task["update_url"], content=update)
    assert anonymous.status_code == 401
    assert hub.client.post(task["update_url"] + "?wait=soon", content=update).status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    too_big = post("a", body=b"x" * (65 * 1024))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "body_too_large"
    streamed = hub.client.post(  # chunked, no declared length: counted as it arrives
        task["update_url"], content=iter([b"x" * 40_000] * 2), headers=hub.headers(tokens["a"])
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"
    as_admin = hub.client.post(task["update_url"], content=update, headers=hub.headers())
    assert as_admin.status_code == 403
    refusals = hub.client.get("/api/v1/audit", headers=hub.headers()).json()
    assert any(r["action"] == "fl.update" and r["outcome"] == "forbidden" for r in refusals)


def test_a_failing_close_does_not_fail_the_stored_update(
    hub_factory, tmp_path, monkeypatch
) -> None:
    hub, tokens, spec = _setup(hub_factory, tmp_path)
    job = {"model": "iris", "data": "iris", "rounds": 2, "min_sites": 1, "id": "j4"}
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()
    coordinator = hub.ctx.federation
    advance = coordinator.advance

    def broken(job_id: str) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(coordinator, "advance", broken)
    update = wire.pack(
        {"attempt": 1, "num_examples": 10, "metrics": {}},
        {"delta": np.full(spec.size(), 0.1, np.float32)},
    )
    url = "/api/v1/federation/jobs/j4/rounds/1/updates"
    for site in ("a", "b"):
        posted = hub.client.post(url, content=update, headers=hub.headers(tokens[site]))
        assert posted.status_code == 200, posted.text
    assert posted.json()["round_complete"]
    monkeypatch.setattr(coordinator, "advance", advance)
    advance("j4")  # what the coordinator loop does next
    status = hub.client.get("/api/v1/federation/jobs/j4", headers=hub.headers()).json()
    assert status["round_details"][0]["state"] == "closed"


def test_bad_jobs_are_refused_with_400(hub_factory, tmp_path) -> None:
    hub, _, _ = _setup(hub_factory, tmp_path)
    viewer = hub.token("viewer")
    for body, code in [
        ({"model": "iris", "data": "iris"}, 400),
        ({"model": "iris", "data": "iris", "rounds": 1, "strategy": "magic"}, 400),
        ({"model": "iris", "data": "iris", "rounds": 1, "strategy": "krum", "min_sites": 2}, 400),
        ({"model": "nope", "data": "iris", "rounds": 1}, 404),
        ({"model": "iris", "data": "iris", "rounds": 1, "sites": "tier in ("}, 400),
    ]:
        response = hub.client.post("/api/v1/federation/jobs", json=body, headers=hub.headers())
        assert response.status_code == code, (body, response.text)
    denied = hub.client.post(
        "/api/v1/federation/jobs",
        json={"model": "iris", "data": "iris", "rounds": 1},
        headers=hub.headers(viewer),
    )
    assert denied.status_code == 403


def test_personalization_registers_a_variant_per_site(hub_factory, tmp_path) -> None:
    hub, tokens, spec = _setup(hub_factory, tmp_path)
    job = {
        "model": "iris",
        "data": "iris",
        "rounds": 1,
        "min_sites": 2,
        "id": "j3",
        "strategy": "fedprox",
        "personalize_epochs": 3,
    }
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()

    def post(site: str, number: int, delta: float):
        update = wire.pack(
            {"attempt": 1, "num_examples": 10, "metrics": {"train_loss": 0.5}},
            {"delta": np.full(spec.size(), delta, np.float32)},
        )
        url = f"/api/v1/federation/jobs/j3/rounds/{number}/updates?wait=5"
        answer = hub.client.post(url, content=update, headers=hub.headers(tokens[site]))
        assert answer.status_code == 200, answer.text
        return answer.json()

    post("a", 1, 0.1)
    (personal,) = post("b", 1, 0.2)["tasks"]
    assert (personal["round"], personal["kind"]) == (2, "personalize")
    # Plain fine-tuning for the asked epochs: no FedProx pull towards the global model.
    assert personal["train"]["local_epochs"] == 3
    assert personal["train"]["proximal_mu"] == 0
    post("a", 2, 1.0)
    refused = hub.client.post(
        personal["refusal_url"],
        json={"attempt": 1, "reason": "no time today"},
        headers=hub.headers(tokens["b"]),
    )
    assert refused.status_code == 200
    hub.ctx.federation.advance("j3")

    done = hub.client.get("/api/v1/federation/jobs/j3", headers=hub.headers()).json()
    assert done["state"] == "completed", done["message"]
    assert done["result_version"] == 2
    assert done["variants"] == {"a": 3}
    # The personalization round's updates were kept until their variants existed; now
    # the job is over no site's own update remains at the hub.
    repo = hub.ctx.federation.repo
    assert [list(repo.iter_payloads("j3", n)) for n in (1, 2)] == [[], []]
    assert "site variants: a=iris:3" in done["message"]
    assert done["round_details"][1]["updates"][1]["reason"] == "no time today"

    def weights(version: int) -> np.ndarray:
        record = hub.ctx.registry.resolve(parse_ref(f"iris:{version}"))
        data = b"".join(hub.ctx.registry.artifacts.read_range(record.digest, 0, None))
        return flatten(spec, read_onnx(onnx.load_from_string(data))[1])

    base = flatten(spec, init_weights(spec))
    np.testing.assert_allclose(weights(2), base + 0.15, atol=1e-6)  # the global result
    np.testing.assert_allclose(weights(3), base + 1.15, atol=1e-6)  # a's fine-tuned variant
    variant = hub.ctx.registry.resolve(parse_ref("iris:3"))
    assert variant.tags["fl.site"] == "a"
    assert variant.parent_version == 2
    pinned = hub.client.put(
        "/api/v1/overrides", json={"site": "a", "ref": "iris:3"}, headers=hub.headers()
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["version"] == 3
