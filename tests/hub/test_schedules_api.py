"""/api/v1/schedules and /api/v1/triggers in process: bad input refused with the reason
(cron, time zone, hook URL, unknown model or metric, a job spec naming an id), a viewer
reads but does not write, secrets are shown once, writes are audited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import InProcessHub

HOOK = {"kind": "hook", "url": "https://ci.example/retrain"}


@pytest.fixture
def hub(hub_factory: Callable[..., InProcessHub], tiny_onnx: Callable[..., Path]) -> InProcessHub:
    made = hub_factory()
    made.client.post(
        "/api/v1/models/pump/versions",
        content=tiny_onnx().read_bytes(),
        headers={**made.headers(), "Content-Type": "application/octet-stream"},
    ).raise_for_status()
    return made


def put(hub: InProcessHub, what: str, name: str, body: dict, token: str | None = None):
    return hub.client.put(f"/api/v1/{what}/{name}", json=body, headers=hub.headers(token))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cron": "61 * * * *"}, "does not parse"),
        ({"cron": "0 3 * * MON *"}, "has 6 fields; it needs five"),
        ({"cron": "0 3 * *"}, "has 4 fields"),
        ({"cron": "@weekly"}, "macros"),
        ({"cron": "0 3 * * FUNDAY"}, "does not parse"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": ""}, "timezone"),
        ({"misfire_grace_s": 0}, "misfire_grace_s"),
        ({"misfire_grace_s": 10**9}, "misfire_grace_s"),
        ({"action": {"kind": "hook", "url": "ftp://x/y"}}, "hook URL must be http:// or https://"),
        ({"action": {"kind": "hook", "url": "http://"}}, "has no host"),
        ({"action": {"kind": "hook", "url": "https://x", "secret": "short"}}, "secret"),
        ({"action": {"kind": "hook", "url": "https://x", "payload": {"a": "x" * 5000}}}, "4096"),
        ({"action": {"kind": "pipeline"}}, "action"),
        (
            {"action": {"kind": "federated", "job": {"model": "ghost", "data": "d", "rounds": 1}}},
            "unknown model in the job spec",
        ),
        (
            {"action": {"kind": "federated", "job": {"model": "pump", "data": "d", "rounds": 0}}},
            "rounds",
        ),
        (
            {
                "action": {
                    "kind": "federated",
                    "job": {"id": "x", "model": "pump", "data": "d", "rounds": 1},
                }
            },
            "must not name an id",
        ),
        ({"enabled": "sometimes"}, "enabled"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(
    hub: InProcessHub, change: dict, reason: str
) -> None:
    body = {"cron": "0 3 * * MON", "timezone": "Europe/Berlin", "action": HOOK, **change}
    response = put(hub, "schedules", "weekly", body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]
    assert hub.client.get("/api/v1/schedules", headers=hub.headers()).json() == []


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ({"kind": "drift", "model": "ghost"}, "unknown model 'ghost'"),
        ({"kind": "new_version", "model": "no such"}, "invalid model name"),
        ({"kind": "anomaly", "model": "pump", "metric": "vibes"}, "unknown anomaly metric 'vibes'"),
        ({"kind": "anomaly", "model": "pump", "severity": "mild"}, "severity"),
        ({"kind": "accuracy_below", "model": "pump", "floor": 0.9, "metric": "f1"}, "metric"),
        # The hub has its accuracy service (a Triggers without one: test_schedules_triggers).
        ({"kind": "accuracy_below", "model": "ghost", "floor": 0.9}, "unknown model 'ghost'"),
        ({"kind": "drift", "model": "pump", "min_sites": 0}, "min_sites"),
        ({"kind": "sunspots", "model": "pump"}, "condition"),
    ],
)
def test_bad_triggers_are_refused_with_the_reason(
    hub: InProcessHub, condition: dict, reason: str
) -> None:
    response = put(hub, "triggers", "t", {"condition": condition, "action": HOOK})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]


def test_cooldown_and_names_are_bounded(hub: InProcessHub) -> None:
    body = {"condition": {"kind": "drift", "model": "pump"}, "action": HOOK, "cooldown_s": 0}
    assert put(hub, "triggers", "t", body).status_code == 400
    body["cooldown_s"] = 60
    assert put(hub, "triggers", "bad name!", body).status_code == 400
    assert put(hub, "triggers", "t" * 65, body).status_code == 400


def test_viewer_reads_operator_writes_secret_shown_once_and_audited(hub: InProcessHub) -> None:
    viewer, operator = hub.token("viewer"), hub.token("operator")
    body = {"cron": "0 3 * * MON", "timezone": "Europe/Berlin", "action": HOOK}
    assert put(hub, "schedules", "weekly", body, viewer).status_code == 403
    saved = put(hub, "schedules", "weekly", body, operator)
    assert saved.status_code == 200, saved.text
    secret = saved.json()["secret"]
    assert len(secret) >= 32
    assert saved.json()["next_slot"].endswith("+01:00") or saved.json()["next_slot"].endswith(
        "+02:00"
    )
    listed = hub.client.get("/api/v1/schedules", headers=hub.headers(viewer))
    assert listed.status_code == 200
    assert secret not in listed.text
    assert "secret" not in listed.json()[0]["action"]
    again = put(hub, "schedules", "weekly", {**body, "description": "weekly"}, operator)
    assert again.json()["secret"] is None  # kept, not re-made
    fires = hub.client.get("/api/v1/schedules/weekly/fires", headers=hub.headers(viewer))
    assert fires.status_code == 200
    assert fires.json() == []
    gone = hub.client.get("/api/v1/schedules/nope/fires", headers=hub.headers())
    assert gone.status_code == 404
    assert (
        hub.client.delete("/api/v1/schedules/weekly", headers=hub.headers(viewer)).status_code
        == 403
    )
    assert (
        hub.client.delete("/api/v1/schedules/weekly", headers=hub.headers(operator)).status_code
        == 204
    )
    assert hub.client.delete("/api/v1/schedules/weekly", headers=hub.headers()).status_code == 404
    actions = [e.action for e in hub.ctx.store.audit.list(limit=100)]
    assert actions.count("schedule.save") >= 3
    assert "schedule.remove" in actions

    trigger = {"condition": {"kind": "new_version", "model": "pump"}, "action": HOOK}
    made = put(hub, "triggers", "on-push", trigger, operator)
    assert made.status_code == 200, made.text
    view = hub.client.get("/api/v1/triggers/on-push", headers=hub.headers(viewer)).json()
    assert view["condition"]["kind"] == "new_version"
    assert view["fires"] == 0
    assert "secret" not in view["action"]
    assert hub.client.get("/api/v1/triggers", headers=hub.headers(viewer)).status_code == 200
    assert hub.client.delete("/api/v1/triggers/on-push", headers=hub.headers()).status_code == 204


def test_a_hook_url_shows_only_its_origin(hub: InProcessHub) -> None:
    """A Slack-style hook URL carries its secret in the path: a reader sees the origin."""
    url = "https://hooks.example:8443/services/T0/B0/s3cr3t-path?token=also-secret"
    body = {"cron": "0 3 * * MON", "timezone": "Europe/Berlin", "action": {**HOOK, "url": url}}
    assert put(hub, "schedules", "slack", body, hub.token("operator")).status_code == 200
    shown = hub.client.get("/api/v1/schedules/slack", headers=hub.headers(hub.token("viewer")))
    assert shown.status_code == 200
    assert shown.json()["action"]["url"] == "https://hooks.example:8443/…"
    assert "s3cr3t" not in shown.text
    assert "also-secret" not in shown.text
