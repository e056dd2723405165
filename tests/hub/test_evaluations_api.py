"""The evaluations API on an in-process hub, with sites played over HTTP by their tokens.

What a real site does is in tests/site/test_evaluation_e2e.py; here the hub's side: the
requests it refuses and why, who it selects and who it records as refused, how it adds
up counts, when it finishes and what it tells.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.hub.evaluations import beats
from modelfleet.site.evaluation import Counts
from tests.hub.evaluation_support import classifiers, regressors
from tests.waiting import wait_for

CONSENT = {"participate": True, "datasets": ["plant"]}


@pytest.fixture
def hub(hub_factory, tmp_path: Path):
    """A hub with classifier ``clf`` (v1 bad = production, v2 good = candidate) and three
    reporting sites: h1, h2 (role=holdout, consenting) and t1 (role=train)."""
    made = hub_factory()
    good, bad = classifiers(tmp_path)
    for path, alias in ((bad, "production"), (good, "candidate")):
        made.client.post(
            "/api/v1/models/clf/versions",
            params={"alias": alias},
            content=path.read_bytes(),
            headers=made.headers(),
        ).raise_for_status()
    made.site_tokens = {}
    for name, role in (("h1", "holdout"), ("h2", "holdout"), ("t1", "train")):
        _, secret = made.ctx.sites.add(name, {"role": role})
        token = made.ctx.sites.enroll(secret).token
        made.site_tokens[name] = token
        h = made.headers(token)
        made.client.post(f"/api/v1/sites/{name}/report", json={}, headers=h).raise_for_status()
        made.client.put(
            f"/api/v1/federation/sites/{name}/consent", json=CONSENT, headers=h
        ).raise_for_status()
    return made


def start(hub, **body):
    request = {"model": "clf", "versions": ["candidate", "production"], "selector": "role=holdout"}
    return hub.client.post("/api/v1/evaluations", json=request | body, headers=hub.headers())


def both(count: int, right_v2: float, right_v1: float) -> dict:
    """Counts for versions 2 and 1 over ``count`` rows."""
    return {"2": {"count": count, "total": right_v2}, "1": {"count": count, "total": right_v1}}


def post_counts(hub, site: str, evaluation: str, scores: dict):
    return hub.client.post(
        f"/api/v1/evaluations/{evaluation}/results",
        json={"scores": scores},
        headers=hub.headers(hub.site_tokens[site]),
    )


def test_counts_are_weighted_by_rows_and_the_better_version_wins(hub) -> None:
    created = start(hub)
    assert created.status_code == 201, created.text
    ev = created.json()
    assert ev["versions"] == [2, 1]
    assert ev["metric"] == "accuracy"
    assert ev["state"] == "running"
    assert ev["sites"]["h1"]["status"] == "waiting"
    assert "t1" not in ev["sites"]  # the selector does not match it
    # A site sees its task, with what it needs to verify each version.
    tasks = hub.client.get(
        "/api/v1/evaluations/sites/h1/tasks", headers=hub.headers(hub.site_tokens["h1"])
    ).json()["tasks"]
    assert [t["evaluation"] for t in tasks] == [ev["id"]]
    assert {v["version"] for v in tasks[0]["versions"]} == {1, 2}
    assert all(v["signature"] and v["manifest"] for v in tasks[0]["versions"])
    # h1: 100 rows, v2 90 right, v1 10; h2: 300 rows, v2 270 right, v1 60.
    assert post_counts(hub, "h1", ev["id"], both(100, 90, 10)).status_code == 200
    again = post_counts(hub, "h1", ev["id"], both(100, 0, 0))
    assert again.json()["new"] is False  # one answer per site: a retry changes nothing
    post_counts(hub, "h2", ev["id"], both(300, 270, 60)).raise_for_status()
    done = hub.client.get(f"/api/v1/evaluations/{ev['id']}", headers=hub.headers()).json()
    assert done["state"] == "completed", done
    assert done["per_version"]["2"]["value"] == pytest.approx(360 / 400)
    assert done["per_version"]["1"]["value"] == pytest.approx(70 / 400)
    assert done["per_version"]["2"]["count"] == 400
    assert done["per_version"]["2"]["sites"] == 2
    assert done["sites"]["h2"]["scores"]["1"]["value"] == pytest.approx(0.2)
    assert done["winner"] == 2
    comparison = done["beats"]["candidate_vs_production"]
    assert comparison["beats"] is True
    assert comparison["margin"] == pytest.approx(290 / 400)
    # The in-process interface the pipeline uses says the same.
    record = hub.ctx.evaluations.get(ev["id"])
    assert record.winner == 2
    assert beats(record, 2, 1)
    assert not beats(record, 1, 2)
    assert not beats(record, 2, 1, margin=0.9)  # not by that much
    # Told once, with its natural key.
    events = hub.client.get(
        "/api/v1/events", params={"types": "evaluation.*"}, headers=hub.headers()
    ).json()
    told = [e for e in events if e["subject"] == ev["id"]]
    assert [e["type"] for e in told] == ["evaluation.completed"]
    assert told[0]["payload"]["winner"] == 2
    assert told[0]["payload"]["per_version"]["2"]["count"] == 400
    listed = hub.client.get(
        "/api/v1/evaluations", params={"model": "clf"}, headers=hub.headers()
    ).json()
    assert [e["id"] for e in listed] == [ev["id"]]


def test_a_refusal_is_recorded_and_a_silent_site_is_missing_after_the_deadline(hub) -> None:
    ev = start(hub, deadline_s=5).json()
    refused = hub.client.post(
        f"/api/v1/evaluations/{ev['id']}/refusals",
        json={"reason": "data set 'plant' unusable: no file /data/plant.csv"},
        headers=hub.headers(hub.site_tokens["h1"]),
    )
    assert refused.status_code == 200, refused.text
    shown = hub.client.get(f"/api/v1/evaluations/{ev['id']}", headers=hub.headers()).json()
    assert shown["state"] == "running"  # h2 has not answered yet
    assert shown["sites"]["h1"] == {
        "site": "h1",
        "status": "refused",
        "reason": "data set 'plant' unusable: no file /data/plant.csv",
        "scores": {},
    }

    def finished() -> bool:
        hub.ctx.evaluations.tick()
        return hub.ctx.evaluations.get(ev["id"]).state != "running"

    wait_for(finished, "the evaluation's deadline")
    record = hub.ctx.evaluations.get(ev["id"])
    # Nobody returned counts: failed, no winner, and nothing beats anything.
    assert record.state == "failed"
    assert record.winner is None
    assert record.sites["h2"].status == "missing"
    assert not beats(record, 2, 1)
    late = post_counts(hub, "h2", ev["id"], both(50, 1, 1))
    assert late.status_code == 409


def test_sites_left_out_at_the_start_say_why(hub) -> None:
    h = hub.headers(hub.site_tokens["h2"])
    hub.client.put(
        "/api/v1/federation/sites/h2/consent",
        json={"participate": False, "reason": "ethics board pending"},
        headers=h,
    ).raise_for_status()
    ev = start(hub).json()
    assert ev["sites"]["h2"]["status"] == "refused"
    assert "ethics board pending" in ev["sites"]["h2"]["reason"]
    assert ev["sites"]["h1"]["status"] == "waiting"
    # Another data set than the one the site declared: refused up front as well.
    other = start(hub, data="hospital").json()
    assert "no data set 'hospital'" in other["sites"]["h1"]["reason"]
    assert other["state"] == "failed"
    assert "no selected site" in other["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "nope"}, 404, "nope"),
        ({"versions": ["candidate"]}, 400, "versions"),
        ({"versions": [str(i) for i in range(1, 10)]}, 400, "versions"),
        ({"versions": ["candidate", "2"]}, 400, "nothing to compare"),
        ({"versions": ["candidate", "staging"]}, 404, "staging"),
        ({"versions": ["candidate", "7"]}, 404, "no version 7"),
        ({"selector": "=x"}, 400, "invalid selector term"),
        ({"selector": "role in (a"}, 400, "unbalanced"),
        ({"selector": "role=nowhere"}, 400, "matches no site"),
        ({"min_samples": 0}, 400, "min_samples"),
        ({"min_samples": 10**9}, 400, "min_samples"),
        ({"deadline_s": 10**9}, 400, "deadline_s"),
        ({"metric": "f1"}, 400, "metric"),
        ({"rows": "some"}, 400, "rows"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(hub, body, status, needle) -> None:
    response = start(hub, **body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert hub.client.get("/api/v1/evaluations", headers=hub.headers()).json() == []


def test_bad_answers_and_foreign_callers_are_refused(hub) -> None:
    ev = start(hub).json()
    bad = [
        {"2": {"count": 100, "total": 90}},  # one version missing
        {"2": {"count": 100, "total": 101}, "1": {"count": 100, "total": 1}},  # > count
        {"2": {"count": 5, "total": 5}, "1": {"count": 5, "total": 1}},  # below min_samples
        {"2": {"count": 100, "total": 90, "rows": [1, 0]}, "1": {"count": 100, "total": 1}},
        # per-class counts belong to balanced_accuracy only
        {"2": {"count": 100, "total": 90, "classes": {"0": [90, 100]}}, "1": both(100, 0, 1)["1"]},
    ]
    for scores in bad:
        assert post_counts(hub, "h1", ev["id"], scores).status_code == 400, scores
    # t1 was never selected: it may not answer, see tasks or fetch blobs.
    stranger = post_counts(hub, "t1", ev["id"], both(100, 1, 1))
    assert stranger.status_code == 403
    tasks = hub.client.get(
        "/api/v1/evaluations/sites/t1/tasks", headers=hub.headers(hub.site_tokens["t1"])
    ).json()["tasks"]
    assert tasks == []
    digest = hub.ctx.registry.version("clf", 2).digest
    blob = f"/api/v1/evaluations/{ev['id']}/blobs/{digest}"
    assert hub.client.get(blob, headers=hub.headers(hub.site_tokens["t1"])).status_code == 403
    mine = hub.client.get(blob, headers=hub.headers(hub.site_tokens["h1"]))
    assert mine.status_code == 200
    assert len(mine.content) == hub.ctx.registry.version("clf", 2).size
    part = hub.client.get(blob, headers=hub.headers(hub.site_tokens["h1"]) | {"Range": "bytes=4-"})
    assert part.status_code == 206
    assert part.content == mine.content[4:]
    # A site reads only its own tasks; an operator's token is no site.
    other = hub.client.get(
        "/api/v1/evaluations/sites/h1/tasks", headers=hub.headers(hub.site_tokens["h2"])
    )
    assert other.status_code == 403
    assert post_counts(hub, "h1", ev["id"], {}).status_code == 400
    viewer = hub.token("viewer")
    assert start(hub).status_code == 201
    refused = hub.client.post(
        "/api/v1/evaluations",
        json={"model": "clf", "versions": ["1", "2"], "selector": ""},
        headers=hub.headers(viewer),
    )
    assert refused.status_code == 403


def split(right0: int, rows0: int, right1: int, rows1: int) -> dict:
    """One version's balanced-accuracy answer, as the site's worker words it."""
    classes = {"0": (right0, rows0), "1": (right1, rows1)}
    return Counts(rows0 + rows1, float(right0 + right1), classes).wire()


def pair(hub, ev: dict) -> dict:
    return hub.client.get(f"/api/v1/evaluations/{ev['id']}", headers=hub.headers()).json()


def test_balanced_accuracy_prefers_the_model_that_catches_failures(hub) -> None:
    """Failures are 5 % of the rows. v1 (production) never predicts one; v2 (candidate)
    catches most, with some false alarms. Plain accuracy prefers v1, balanced v2."""
    answers = {
        # h1: 190 healthy, 10 failures; h2: 380 healthy, 20 failures.
        "h1": {"2": split(170, 190, 8, 10), "1": split(190, 190, 0, 10)},
        "h2": {"2": split(350, 380, 17, 20), "1": split(380, 380, 0, 20)},
    }
    plain = start(hub, metric="accuracy").json()
    for site, scores in answers.items():
        counts = {v: {"count": c["count"], "total": c["total"]} for v, c in scores.items()}
        post_counts(hub, site, plain["id"], counts).raise_for_status()
    assert pair(hub, plain)["winner"] == 1  # 570/600 right against 545/600
    created = start(hub, metric="balanced_accuracy")
    assert created.status_code == 201, created.text
    ev = created.json()
    assert ev["metric"] == "balanced_accuracy"
    tasks = hub.client.get(
        "/api/v1/evaluations/sites/h1/tasks", headers=hub.headers(hub.site_tokens["h1"])
    ).json()["tasks"]
    assert [t["metric"] for t in tasks] == ["balanced_accuracy"]
    for site, scores in answers.items():
        post_counts(hub, site, ev["id"], scores).raise_for_status()
    done = pair(hub, ev)
    assert done["state"] == "completed", done
    # Merged per class over the sites, exactly as if the rows had been pooled.
    v2, v1 = done["per_version"]["2"], done["per_version"]["1"]
    assert v2["classes"] == {"0": [520, 570], "1": [25, 30]}
    assert v1["classes"] == {"0": [570, 570], "1": [0, 30]}
    assert v2["value"] == pytest.approx((520 / 570 + 25 / 30) / 2)
    assert v1["value"] == pytest.approx(0.5)
    assert v2["count"] == 600
    assert v2["sites"] == 2
    h2 = done["sites"]["h2"]["scores"]["2"]
    assert h2["value"] == pytest.approx((350 / 380 + 17 / 20) / 2)
    assert h2["classes"] == {"0": [350, 380], "1": [17, 20]}
    assert done["winner"] == 2
    comparison = done["beats"]["candidate_vs_production"]
    assert comparison["beats"] is True
    assert comparison["margin"] == pytest.approx((520 / 570 + 25 / 30) / 2 - 0.5)
    assert beats(hub.ctx.evaluations.get(ev["id"]), 2, 1)
    # The other metrics carry no per-class counts.
    assert pair(hub, plain)["per_version"]["2"]["classes"] is None


@pytest.mark.parametrize(
    ("classes", "needle"),
    [
        (None, "needs per-class counts"),
        ({str(i): [1, 1] for i in range(65)}, "at most 64"),
        ({"0": [-1, 90], "1": [91, 10]}, "greater than or equal to 0"),
        ({"0": [95, 90], "1": [0, 10]}, "95 right of 90 rows"),
        ({"x" * 129: [90, 90], "1": [0, 10]}, "at most 128 characters"),
        ({}, "at least 1"),
        ({"0": [80, 90], "1": [5, 10]}, "add up to 85 right of 100 rows, not 90 of 100"),
        ({"0": [90, 90], "1": [0, 20]}, "add up to 90 right of 110 rows"),
        ({"0": "ninety"}, "classes"),
    ],
)
def test_bad_per_class_counts_are_refused_with_the_reason(hub, classes, needle) -> None:
    ev = start(hub, metric="balanced_accuracy").json()
    scores = {"2": {"count": 100, "total": 90}, "1": split(90, 90, 0, 10)}
    if classes is not None:
        scores["2"]["classes"] = classes
    refused = post_counts(hub, "h1", ev["id"], scores)
    assert refused.status_code == 400, refused.text
    assert needle in refused.json()["error"]["message"]
    assert pair(hub, ev)["sites"]["h1"]["status"] == "waiting"  # nothing was stored


def test_a_regressor_is_judged_by_mae_lower_wins(hub_factory, tmp_path: Path) -> None:
    made = hub_factory()
    good, bad = regressors(tmp_path)
    for path in (good, bad):
        made.client.post(
            "/api/v1/models/reg/versions", content=path.read_bytes(), headers=made.headers()
        ).raise_for_status()
    _, secret = made.ctx.sites.add("r1", {"role": "holdout"})
    token = made.ctx.sites.enroll(secret).token
    h = made.headers(token)
    made.client.post("/api/v1/sites/r1/report", json={}, headers=h).raise_for_status()
    made.client.put(
        "/api/v1/federation/sites/r1/consent", json=CONSENT, headers=h
    ).raise_for_status()
    record = made.ctx.evaluations.start("reg", ["2", "1"], "role=holdout", actor="pipeline")
    assert record.metric == "mae"
    assert record.versions == [2, 1]
    made.client.post(
        f"/api/v1/evaluations/{record.id}/results",
        json={"scores": {"2": {"count": 50, "total": 200.0}, "1": {"count": 50, "total": 0.5}}},
        headers=h,
    ).raise_for_status()
    done = made.ctx.evaluations.get(record.id)
    assert done.state == "completed"
    assert done.winner == 1
    assert done.per_version[1].value == pytest.approx(0.01)
    assert beats(done, 1, 2)
    assert not beats(done, 2, 1)
    # A label metric for a model with one real value per row: refused at the start.
    for metric in ("balanced_accuracy", "accuracy"):
        refused = made.client.post(
            "/api/v1/evaluations",
            json={"model": "reg", "versions": ["2", "1"], "selector": "", "metric": metric},
            headers=made.headers(),
        )
        assert refused.status_code == 400, refused.text
        assert f"metric {metric} needs a classifier; reg:2" in refused.json()["error"]["message"]


def test_a_residency_rule_keeps_a_version_away_from_a_site(hub, tmp_path: Path) -> None:
    good, bad = classifiers(tmp_path)
    for path in (bad, good):
        hub.client.post(
            "/api/v1/models/eu/versions",
            params={"training_region": "EU"},
            content=path.read_bytes(),
            headers=hub.headers(),
        ).raise_for_status()
    hub.ctx.sites.set_labels("h1", {"role": "holdout", "jurisdiction": "EU"})
    hub.ctx.sites.set_labels("h2", {"role": "holdout", "jurisdiction": "US"})
    rule = {"name": "eu-data", "kind": "residency", "regions": ["EU"]}
    rule["allowed_jurisdictions"] = ["EU"]
    hub.client.put(
        "/api/v1/policies", json={"policies": [rule]}, headers=hub.headers()
    ).raise_for_status()
    ev = start(hub, model="eu", versions=["2", "1"]).json()
    assert ev["sites"]["h1"]["status"] == "waiting"
    assert ev["sites"]["h2"]["status"] == "refused"
    assert "residency" in ev["sites"]["h2"]["reason"]
    assert "eu-data" in ev["sites"]["h2"]["reason"]
