"""Anomalies through a real hub process: windows posted as a site posts them, the API, the
CLI, the Prometheus gauge, per-model settings and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelfleet.cli.main import app
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from modelfleet.site.telemetry import TelemetryRecorder
from tests.waiting import wait_for

WINDOW_S = 10.0
FAST = {"bucket_s": 10, "warmup": 5, "history": 20}


@dataclass
class Hub:
    process: HubProcess
    admin: HubClient
    token: str

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    init = init_hub(tmp_path / "hub")
    process = HubProcess(tmp_path / "hub", tls=False).start()
    admin = HubClient(process.url, init.admin_token)
    try:
        yield Hub(process, admin, init.admin_token)
    finally:
        admin.close()
        process.stop()


def enroll(hub: Hub, name: str) -> str:
    created = hub.admin.add_site(name, {"region": "eu-west"})
    answer = httpx.post(f"{hub.url}/api/v1/enroll", json={"token": created.enrollment_token})
    answer.raise_for_status()
    return str(answer.json()["token"])


def site_windows(end: float, count: int, *, burst_from: int) -> list[dict[str, Any]]:
    """``count`` closed 10 s windows up to ``end`` from the site's own recorder; from
    window ``burst_from`` on, 30 % of requests fail."""
    rng = np.random.default_rng(3)
    now = [0.0]
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=WINDOW_S, clock=lambda: now[0])
    first = math.floor(end / WINDOW_S) * WINDOW_S - count * WINDOW_S
    for w in range(count):
        start = first + w * WINDOW_S
        for i in range(40):
            now[0] = start + i * WINDOW_S / 40
            failed = w >= burst_from and rng.random() < 0.3
            x = rng.normal(size=(1, 2)).astype(np.float32)
            recorder.observe(
                model="pump", version=1, latency_s=float(rng.lognormal(-6, 0.2)),
                outcome="error" if failed else "ok", batch_size=1, inputs={"X": x},
                outputs=None if failed else {"Y": x.sum(axis=1)},
            )  # fmt: skip
        now[0] = start + WINDOW_S
        recorder.flush()
    return closed


def post(hub: Hub, site: str, token: str, windows: list[dict[str, Any]]) -> None:
    body = {"batch_id": uuid.uuid4().hex, "spool_id": "s1", "windows": windows}
    answer = httpx.post(
        f"{hub.url}/api/v1/sites/{site}/telemetry",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text


def get(hub: Hub, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{hub.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token or hub.token}"},
    )


def test_an_error_burst_is_listed_gauged_and_shown_by_the_cli(hub: Hub, tiny_onnx) -> None:
    hub.admin.push(tiny_onnx(features=2), "pump")
    settings = hub.admin.set_anomaly_settings("pump", FAST)
    assert settings["bucket_s"] == 10
    assert settings["sensitivity"] == 4.0  # the default stays
    assert hub.admin.get_anomaly_settings("pump") == settings
    # The drift thresholds do not show the anomaly settings stored beside them.
    assert "anomaly.bucket_s" not in hub.admin.get_drift_thresholds("pump")
    site = enroll(hub, "plant-a")
    post(hub, "plant-a", site, site_windows(time.time() - 20, 30, burst_from=26))

    def open_error_rate() -> list[dict[str, Any]]:
        found = hub.admin.anomalies(open_only=True)["anomalies"]
        return [a for a in found if a["metric"] == "error_rate"]

    wait_for(lambda: bool(open_error_rate()), "an open error_rate anomaly", timeout=30)
    (anomaly,) = open_error_rate()
    assert anomaly["site"] == "plant-a"
    assert anomaly["model"] == "pump"
    assert anomaly["version"] == 1
    assert anomaly["end"] is None
    assert anomaly["open"] is True
    assert anomaly["observed"] > 0.15
    assert anomaly["expected"] < 0.05
    assert anomaly["severity"] in {"warning", "critical"}
    assert hub.admin.anomalies(site="elsewhere")["anomalies"] == []

    metrics = get(hub, "/metrics").text
    assert 'modelfleet_anomalies_open{metric="error_rate",model="pump",' in metrics

    runner = CliRunner()
    env = {"MODELFLEET_HUB_URL": hub.url, "MODELFLEET_TOKEN": hub.token, "COLUMNS": "160"}
    shown = runner.invoke(app, ["anomalies", "--open", "--site", "plant-a"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "error_rate" in shown.output
    assert "open" in shown.output
    as_json = runner.invoke(app, ["anomalies", "--model", "pump", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert '"error_rate"' in as_json.output
    status = runner.invoke(app, ["status"], env=env)
    assert status.exit_code == 0, status.output
    assert "open anomalies at plant-a" in status.output
    changed = runner.invoke(
        app,
        ["anomalies", "--model", "pump", "--set", "sensitivity=5", "--set", "warmup=6"],
        env=env,
    )
    assert changed.exit_code == 0, changed.output
    assert "pump: sensitivity z >= 5, warm-up 6, history 20, buckets 10 s" in changed.output
    assert hub.admin.get_anomaly_settings("pump")["warmup"] == 6
    # Bad values: one line on stderr and exit 1, as the installed command prints them.
    for args, message in (
        (["--since", "3y"], "error: invalid --since '3y'"),
        (["--site", "nowhere"], "error: "),
        (["--set", "sensitivity=5"], "error: --set changes one model's settings"),
        (["--model", "pump", "--set", "sensitivity"], "error: invalid --set 'sensitivity'"),
        (["--model", "pump", "--set", "sensitivity=0"], "error: invalid anomaly setting"),
    ):
        bad = subprocess.run(
            [sys.executable, "-m", "modelfleet", "anomalies", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1, bad
        assert bad.stderr.startswith(message), bad.stderr
        assert "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_settings_need_an_operator_and_bad_input_is_a_4xx(hub: Hub, tiny_onnx) -> None:
    hub.admin.push(tiny_onnx(), "pump")
    viewer = hub.admin.create_token("watcher", "viewer").token
    assert get(hub, "/api/v1/anomalies", viewer).status_code == 200
    assert get(hub, "/api/v1/models/pump/anomaly-settings", viewer).status_code == 200
    url = f"{hub.url}/api/v1/models/pump/anomaly-settings"
    refused = httpx.put(url, json={"sensitivity": 5}, headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403
    admin = {"Authorization": f"Bearer {hub.token}"}
    for body in (
        {"sensitivity": 0},
        {"sensitivity": "high"},
        {"warmup": 500, "history": 100},
        {"bucket_s": 1e12},
        {"no_such_setting": 1},
    ):
        answer = httpx.put(url, json=body, headers=admin)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "invalid_input"
    assert httpx.put(url, json={"sensitivity": 6.5}, headers=admin).status_code == 200
    assert hub.admin.get_anomaly_settings("pump")["sensitivity"] == 6.5
    missing = f"{hub.url}/api/v1/models/ghost/anomaly-settings"
    assert httpx.put(missing, json={"sensitivity": 5}, headers=admin).status_code == 404
    assert httpx.get(missing, headers=admin).status_code == 404
    for params in ({"since_s": 5}, {"since_s": 1e9}, {"site": "../x"}, {"open_only": "maybe"}):
        answer = get(hub, "/api/v1/anomalies", **params)
        assert 400 <= answer.status_code < 500, (params, answer.text)
    entries = get(hub, "/api/v1/audit", action="model.anomaly_settings").json()
    outcomes = {e["outcome"] for e in entries}
    assert {"ok", "forbidden"} <= outcomes, entries


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_settings_live_beside_the_drift_thresholds(
    backend: str, hub_factory, tiny_onnx, request: pytest.FixtureRequest
) -> None:
    """Both stores keep the settings with the model; each write keeps the other's values."""
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    hub = hub_factory(db=db)
    with tiny_onnx().open("rb") as fh:
        pushed = hub.client.post(
            "/api/v1/models/pump/versions", content=fh.read(), headers=hub.headers()
        )
    assert pushed.status_code == 201, pushed.text
    settings = "/api/v1/models/pump/anomaly-settings"
    thresholds = "/api/v1/models/pump/drift-thresholds"
    operator = hub.headers(hub.token("operator"))
    assert hub.client.put(settings, json={"sensitivity": 7}, headers=operator).status_code == 200
    assert hub.client.put(thresholds, json={"psi": 0.3}, headers=operator).status_code == 200
    assert hub.client.put(settings, json={"warmup": 12}, headers=operator).status_code == 200
    got = hub.client.get(settings, headers=hub.headers(hub.token("viewer"))).json()["settings"]
    assert (got["sensitivity"], got["warmup"], got["history"]) == (7.0, 12, 60)
    drift = hub.client.get(thresholds, headers=hub.headers()).json()["thresholds"]
    assert drift["psi"] == 0.3
    assert not [k for k in drift if k.startswith("anomaly")]
    # Back to a default: the override is dropped, the drift threshold stays.
    assert hub.client.put(settings, json={"sensitivity": 4}, headers=operator).status_code == 200
    assert hub.client.get(thresholds, headers=hub.headers()).json()["thresholds"]["psi"] == 0.3
    assert hub.ctx.store.telemetry.get_drift_settings("pump") == {"psi": 0.3, "anomaly.warmup": 12}
