"""Schedules in a real hub process (``modelfleet hub serve``) on the test clock
(``MODELFLEET_HUB_TEST_CLOCK_FILE``), driven by the real CLI, with a real loopback HTTP
receiver as the retraining hook: "next Monday 03:00 Europe/Berlin" arrives when the test
writes it; the hub SIGKILLed before a slot and restarted after it fires that slot once;
bad input through the CLI is one line naming the fault."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from tests.conftest import trust_fleet_ca
from tests.hub.test_anomalies_api import FAST, Hub, enroll, post, site_windows
from tests.waiting import wait_for
from tests.webhook_receiver import receiver

SECRET = "a-retraining-hook-secret"


def cli(hub: HubProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", *args, "--hub", hub.url, "--token", token],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_slot_arrives_on_the_test_clock_and_fires_once_across_a_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "hub"
    init = init_hub(root)
    trust_fleet_ca(monkeypatch, init.ca_file)
    clock = tmp_path / "clock"
    clock.write_text("2031-01-05T12:00:00+01:00")  # Sunday noon in Berlin
    hub = HubProcess(
        root,
        extra_env={
            "MODELFLEET_HUB_TEST_CLOCK_FILE": str(clock),
            "MODELFLEET_HUB_SCHEDULE_INTERVAL_S": "0.2",
        },
    ).start()
    token = init.admin_token
    admin = HubClient(hub.url, token)
    try:
        with receiver(200) as rec:
            done = cli(hub, token, "schedule", "add", "weekly", "--cron", "0 3 * * MON",
                       "--tz", "Europe/Berlin", "--hook", rec.url + "/hook",
                       "--hook-secret", SECRET, "--payload", '{"pipeline": "retrain"}')  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "next slot Mon 2031-01-06 03:00 CET" in done.stdout
            listed = cli(hub, token, "schedule", "ls")
            assert "Mon 2031-01-06 03:00 CET" in listed.stdout, listed.stdout

            # Monday 03:00 arrives.
            clock.write_text("2031-01-06T03:00:01+01:00")
            wait_for(lambda: len(rec.got) == 1, "the hook for Monday 3 a.m.")
            request = rec.got[0]
            ts = request["headers"]["x-modelfleet-timestamp"]
            mac = hmac.new(SECRET.encode(), ts.encode() + b"." + request["body"], hashlib.sha256)
            assert request["headers"]["x-modelfleet-signature"] == "sha256=" + mac.hexdigest()
            sent = json.loads(request["body"])
            assert sent["slot"] == "2031-01-06T02:00:00+00:00"
            assert sent["payload"] == {"pipeline": "retrain"}
            fires = cli(hub, token, "schedule", "fires", "weekly")
            assert "fired" in fires.stdout, fires.stdout
            assert "HTTP 200" in fires.stdout, fires.stdout

            # Killed before the next Monday's slot; restarted after it (within the grace).
            clock.write_text("2031-01-13T02:59:50+01:00")
            hub.kill()
            clock.write_text("2031-01-13T03:02:00+01:00")
            hub.start()
            wait_for(lambda: len(rec.got) == 2, "the slot due while the hub was down")
            assert json.loads(rec.got[1]["body"])["slot"] == "2031-01-13T02:00:00+00:00"

            # Killed again right after that fire, restarted: nothing fires twice. A
            # minutely schedule added after the restart shows passes ran since.
            hub.kill()
            hub.start()
            admin.set_schedule(
                "tick",
                {"cron": "* * * * *", "timezone": "UTC",
                 "action": {"kind": "hook", "url": rec.url + "/tick", "secret": SECRET}},
            )  # fmt: skip
            clock.write_text("2031-01-13T03:03:00+01:00")
            wait_for(lambda: any(r["path"] == "/tick" for r in rec.got), "a pass after restart")
            weekly = [r for r in rec.got if r["path"] == "/hook"]
            assert len(weekly) == 2
            slots = [f.slot.isoformat() for f in admin.list_schedule_fires("weekly")]
            assert slots == ["2031-01-13T02:00:00+00:00", "2031-01-06T02:00:00+00:00"]
            fired = admin.list_events(types=["schedule.fired"])
            assert [e.subject for e in fired].count("weekly") == 2

            # Bad input through the CLI: one line naming the fault, exit 1.
            bad = cli(hub, token, "schedule", "add", "x", "--cron", "61 * * * *", "--tz", "UTC",
                      "--hook", rec.url)  # fmt: skip
            assert bad.returncode == 1, bad.stderr
            assert "does not parse" in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr
            bad = cli(hub, token, "schedule", "add", "x", "--cron", "0 3 * * *", "--tz",
                      "Berlin", "--hook", rec.url)  # fmt: skip
            assert bad.returncode == 1
            assert "unknown time zone 'Berlin'" in bad.stderr
            bad = cli(hub, token, "schedule", "add", "x", "--cron", "0 3 * * *", "--tz", "UTC",
                      "--hook", "file:///etc/passwd")  # fmt: skip
            assert bad.returncode == 1
            assert "http:// or https://" in bad.stderr
            bad = cli(hub, token, "trigger", "add", "t", "--when", "drift", "--model", "ghost",
                      "--hook", rec.url)  # fmt: skip
            assert bad.returncode == 1
            assert "unknown model 'ghost'" in bad.stderr
            assert cli(hub, token, "schedule", "rm", "tick").returncode == 0
    finally:
        admin.close()
        hub.stop()


def test_an_anomaly_trigger_calls_its_hook_once_in_its_cooldown(tmp_path: Path, tiny_onnx) -> None:
    """On the system clock (no test mode): an error burst posted as telemetry becomes an
    open anomaly at the anomaly loop's next pass, and the trigger's next pass calls its
    hook, once (the cooldown holds while the anomaly stays open)."""
    init = init_hub(tmp_path / "hub")
    process = HubProcess(
        tmp_path / "hub",
        tls=False,
        extra_env={
            "MODELFLEET_HUB_ANOMALY_INTERVAL_S": "1",
            "MODELFLEET_HUB_SCHEDULE_INTERVAL_S": "0.2",
        },
    ).start()
    admin = HubClient(process.url, init.admin_token)
    hub = Hub(process, admin, init.admin_token)
    try:
        with receiver(200) as rec:
            admin.push(tiny_onnx(features=2), "pump")
            admin.set_anomaly_settings("pump", FAST)
            admin.set_trigger(
                "errors",
                {
                    "condition": {"kind": "anomaly", "model": "pump", "metric": "error_rate"},
                    "action": {"kind": "hook", "url": rec.url + "/hook", "secret": SECRET},
                    "cooldown_s": 3600,
                },
            )
            site = enroll(hub, "plant-a")
            post(hub, "plant-a", site, site_windows(time.time() - 10, 30, burst_from=26))
            wait_for(lambda: len(rec.got) == 1, "the trigger's hook")
            sent = json.loads(rec.got[0]["body"])
            assert sent["kind"] == "trigger"
            assert "plant-a error_rate" in sent["reason"]

            def fired() -> bool:
                last = admin.get_trigger("errors").last_fire
                return last is not None and last.state == "fired"

            wait_for(fired, "the outcome on the fire row")
            view = admin.get_trigger("errors")
            assert view.fires == 1
            assert view.cooling_until is not None
            wait_for(lambda: len(admin.list_events(types=["trigger.fired"])) == 1, "the event")
            assert len(rec.got) == 1
    finally:
        admin.close()
        process.stop()
