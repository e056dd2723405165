"""`modelfleet demo --fast` end to end: every expectation of the scenario, from its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_fast_meets_every_expectation() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet", "demo", "--fast", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.stdout, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    checks = summary["checks"]
    assert checks == {
        "residency_refused": True,
        "first_rollout": True,
        "bad_release_rolled_back": True,
        "follow_kept_last_good": True,
        "outage_zero_failures": True,
        "drift_flagged": True,
        "stuck_sensor_flagged": True,
        "federated_registered": True,
        "pipeline_promoted": True,
        "federated_rolled_out": True,
        "telemetry_complete": True,
        "accuracy_from_feedback": True,
    }, result.stderr[-3000:]
    assert result.returncode == 0
    # The figures behind the checks, measured during the run.
    assert summary["outage"]["failed"] == 0
    assert summary["outage"]["requests"] > 0
    assert summary["bad_release"]["sites_that_ran_it"] in ([], ["plant-eu-west"])
    assert summary["drift"] == {"plant-eu-west": ["air_temperature_k"]}
    assert summary["telemetry"]["answered"] == summary["telemetry"]["hub_totals"]
    assert set(summary["federated"]["declined"]) == {"plant-ap-south"}
    # Ground truth: every label a site took is counted at the hub; the outcome figures
    # come from the answers the plants acted on.
    assert sum(summary["ground_truth"]["dropped"].values()) == 0
    assert summary["ground_truth"]["mismatched"] == {}
    fleet = summary["outcomes"]["fleet"]
    assert fleet["failures"] == fleet["caught"] + fleet["missed"] > 0
    assert fleet["downtime_without_h"] > 0
    for plant in ("eu-west", "us-east", "ap-south"):
        latency = summary["latency"][plant]
        assert latency["local_p50_ms"] is not None
        assert latency["central_p50_ms"] is not None
    # Local beats central where the plant is far from the hub's region.
    assert (
        summary["latency"]["ap-south"]["local_p50_ms"]
        < summary["latency"]["ap-south"]["central_p50_ms"]
    )
