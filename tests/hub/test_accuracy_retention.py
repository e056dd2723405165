"""Telemetry retention also deletes the accuracy windows past its horizon
(``telemetry_retention_days``), through the hub's own retention pass: the label counts a
site shipped with an old window are gone from the accuracy API, recent ones stay."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.site.feedback import FeedbackCounts
from modelfleet.site.telemetry import TelemetryRecorder
from tests.conftest import InProcessHub
from tests.deploy.test_controller import World, first_version


def labelled_at(end: float, right: int, wrong: int) -> list[dict[str, Any]]:
    """One window of ``pump`` v1 closed at ``end`` (epoch seconds) by a site's recorder,
    with ``right + wrong`` labels joined."""
    now = [end - 10.0]
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=10.0, clock=lambda: now[0])
    counts = FeedbackCounts(kind="classifier", labels=right + wrong)
    counts.confusion = {k: v for k, v in {("1", "1"): right, ("1", "0"): wrong}.items() if v}
    recorder.add_feedback("pump", 1, counts)
    now[0] = end
    recorder.flush()
    return closed


def labels_by_site(hub: InProcessHub) -> dict[str, int]:
    answer = hub.client.get(
        "/api/v1/accuracy",
        params={"model": "pump", "since": "2000-01-01T00:00:00Z"},
        headers=hub.headers(),
    )
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    return {f["site"]: f["count"] for f in doc["figures"] if f["count"]}


def test_retention_deletes_accuracy_windows_past_the_telemetry_horizon(
    hub_factory: Any, tiny_onnx: Any
) -> None:
    hub = hub_factory(telemetry_retention_days=30, rollout_interval_s=3600)
    world = World(hub, tiny_onnx)
    first_version(world)
    old = time.time() - 40 * 86400  # 40 days ago: past the 30-day horizon
    for site, windows in (("a", labelled_at(old, 3, 1)), ("b", labelled_at(time.time(), 2, 0))):
        world.ctx.telemetry.ingest(site, uuid.uuid4().hex, "s1", (0, 0), windows)
    assert labels_by_site(hub) == {"a": 4, "b": 2}

    hub.ctx.retention.compact_now()
    assert labels_by_site(hub) == {"b": 2}
    # A pass 31 days on: the window shipped today is past the horizon then.
    hub.ctx.retention.compact_now(datetime.now(UTC) + timedelta(days=31))
    assert labels_by_site(hub) == {}
