"""The accuracy gates (``min_accuracy``, ``min_accuracy_vs_previous``, ``max_mae``,
``min_labels``) on label counts ingested as sites ship them, through the hub's telemetry
ingest, the accuracy service, the gate source and the controller; and the accuracy API."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from modelfleet.hub.rollout.sources import TelemetryGateSource
from modelfleet.site.feedback import FeedbackCounts
from modelfleet.site.telemetry import TelemetryRecorder
from tests.deploy.test_controller import CANARY, World, first_version


def labelled(version: int, right: int, wrong: int, model: str = "pump") -> list[dict[str, Any]]:
    """One window as a site's recorder closes it after labels were joined: ``right``
    labels matched the prediction, ``wrong`` did not."""
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=10.0)
    counts = FeedbackCounts(kind="classifier", labels=right + wrong)
    counts.confusion = {("1", "1"): right, ("1", "0"): wrong}
    counts.confusion = {k: v for k, v in counts.confusion.items() if v}
    recorder.add_feedback(model, version, counts)
    recorder.flush()
    return closed


def ship(world: World, site: str, windows: list[dict[str, Any]]) -> None:
    world.ctx.telemetry.ingest(site, uuid.uuid4().hex, "s1", (0, 0), windows)


@pytest.fixture
def world(hub_factory: Any, tiny_onnx: Any) -> World:
    made = World(hub_factory(rollout_interval_s=3600), tiny_onnx)
    made.source = TelemetryGateSource(made.store, made.ctx.telemetry, made.ctx.anomalies)
    made.controller = made.new_controller()
    return made


def test_a_new_version_below_the_floor_fails_and_rolls_back(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"min_accuracy": 0.9, "min_labels": 20})
    start = world.controller.get(rid).step_started_at
    time.sleep(0.01)  # the labels' windows end after the step started
    ship(world, "a", labelled(2, right=5, wrong=5))
    r = world.run(rid, start, 1)
    assert (r.state, r.step) == ("running", 0)  # 10 labels, 20 needed: wait
    ship(world, "a", labelled(2, right=6, wrong=6))
    r = world.run(rid, start, 1)
    assert r.state == "failed"
    assert r.history[-1]["gate"] == "min_accuracy"
    assert "accuracy 50.00% < 90.00% (22 labels)" in r.history[-1]["message"]
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]


def test_a_drop_against_the_previous_version_fails(world: World) -> None:
    first_version(world)
    ship(world, "a", labelled(1, right=95, wrong=5))  # v1: 95 % at site a
    ship(world, "b", labelled(1, right=10, wrong=90))  # another site's labels do not count
    rid = world.deploy(2, **CANARY, gates={"min_accuracy_vs_previous": 0.02, "min_labels": 10})
    start = world.controller.get(rid).step_started_at
    time.sleep(0.01)
    ship(world, "a", labelled(2, right=90, wrong=10))  # 90 %: 5 points down
    r = world.run(rid, start, 1)
    assert r.state == "failed"
    assert r.history[-1]["gate"] == "min_accuracy_vs_previous"
    assert "down 5.00% > 2.00% (100 vs 100 labels)" in r.history[-1]["message"]


def test_a_version_as_good_as_the_previous_passes_the_wave(world: World) -> None:
    first_version(world)
    ship(world, "a", labelled(1, right=95, wrong=5))
    rid = world.deploy(2, **CANARY, gates={"min_accuracy_vs_previous": 0.02, "min_labels": 10})
    start = world.controller.get(rid).step_started_at
    time.sleep(0.01)
    ship(world, "a", labelled(2, right=94, wrong=6))
    r = world.run(rid, start + timedelta(seconds=6), 0)
    assert (r.state, r.step) == ("running", 1)


def test_accuracy_api_per_site_and_version(hub_factory: Any, tiny_onnx: Any) -> None:
    hub = hub_factory(rollout_interval_s=3600)
    world = World(hub, tiny_onnx)
    first_version(world)
    ship(world, "a", labelled(1, right=3, wrong=1))
    ship(world, "a", labelled(1, right=1, wrong=0))
    windows = labelled(1, right=0, wrong=2)
    ship(world, "b", windows)
    ship(world, "b", windows)  # delivered twice (a retry): counted once
    viewer = hub.headers(hub.token("viewer"))
    answer = hub.client.get("/api/v1/accuracy", params={"model": "pump"}, headers=viewer)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    got = {(f["site"], f["version"]): (f["metric"], f["value"], f["count"]) for f in doc["figures"]}
    assert got == {("a", 1): ("accuracy", 0.8, 5), ("b", 1): ("accuracy", 0.0, 2)}
    assert sum(p["count"] for p in doc["series"]) == 7
    one = hub.client.get(
        "/api/v1/accuracy", params={"model": "pump", "site": "b"}, headers=viewer
    ).json()
    assert [f["site"] for f in one["figures"]] == ["b"]
    figures = {(f.site, f.version): f for f in hub.ctx.telemetry.accuracy.latest("pump")}
    assert (figures[("a", 1)].value, figures[("a", 1)].count) == (0.8, 5)


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"model": "nope"}, 404, "nope"),
        ({}, 400, "model"),
        ({"model": "pump", "version": 0}, 400, "version"),
        ({"model": "pump", "since": "2026-01-01T00:00:00"}, 400, "time zone"),
        ({"model": "pump", "bucket_s": 0}, 400, "bucket_s"),
    ],
)
def test_accuracy_api_refuses_bad_queries(
    hub_factory: Any, tiny_onnx: Any, params: dict[str, Any], status: int, says: str
) -> None:
    hub = hub_factory(rollout_interval_s=3600)
    first_version(World(hub, tiny_onnx))
    answer = hub.client.get("/api/v1/accuracy", params=params, headers=hub.headers())
    assert answer.status_code == status, answer.text
    assert says in answer.text


@pytest.mark.parametrize(
    "feedback",
    [
        {"kind": "classifier", "labels": 3, "confusion": [["1", "1", 2]]},
        {"kind": "regressor", "labels": 1, "confusion": [["1", "1", 1]]},
        {"kind": None, "labels": 4},
        {"kind": "regressor", "labels": 1, "abs_error_sum": -1.0},
        {"kind": "classifier", "labels": 1, "confusion": [["x" * 200, "1", 1]]},
    ],
)
def test_the_hub_refuses_inconsistent_feedback_blocks(feedback: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from modelfleet.hub.api.telemetry import BatchIn

    window = {**labelled(1, 1, 0)[0], "feedback": feedback}
    with pytest.raises(ValidationError):
        BatchIn.model_validate({"batch_id": "b1", "spool_id": "s1", "windows": [window]})


def test_the_performance_page_shows_accuracy_per_site_and_version(
    hub_factory: Any, tiny_onnx: Any
) -> None:
    import json
    import re

    hub = hub_factory(rollout_interval_s=3600)
    world = World(hub, tiny_onnx)
    first_version(world)
    ship(world, "a", labelled(1, right=3, wrong=1))
    ship(world, "b", labelled(1, right=1, wrong=1))
    signed = hub.client.post(
        "/ui/login",
        data={"token": hub.admin_token, "next": "/ui/performance"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    page = hub.client.get("/ui/performance", params={"model": "pump", "range": "1h"})
    assert page.status_code == 200, page.text
    html = page.text
    assert "Accuracy from labels (per site &times; version)" in html
    row = re.search(r'<tr data-site="a" data-version="1">.*?</tr>', html, re.S)
    assert row is not None
    assert "75.0 %" in row.group(0)
    chart = re.search(r'id="chart-accuracy">(.*?)</script>', html, re.S)
    assert chart is not None
    doc = json.loads(chart.group(1))
    lines = {s["label"]: [v for v in s["values"] if v is not None] for s in doc["series"]}
    assert lines == {"a v1": [0.75], "b v1": [0.5]}
