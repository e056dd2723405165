"""`modelfleet fl` against a real hub process: start, status, ls, abort, errors, simulate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import yaml

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub_client import HubClient
from tests.cli.conftest import RunningHub


def _push_spec_model(running_hub: RunningHub, tmp_path: Path) -> HubClient:
    spec = ModelSpec(family="softmax", features=64, classes=10)
    path = tmp_path / "digits.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    admin = HubClient(running_hub.process.url, running_hub.token)
    admin.push(path, "digits")
    return admin


def test_fl_start_status_ls_abort(running_hub: RunningHub, tmp_path: Path) -> None:
    admin = _push_spec_model(running_hub, tmp_path)
    admin.add_site("plant-a", {"region": "eu-west"})  # enrolled never, consent never declared
    started = running_hub.cli(
        "fl", "start", "--model", "digits", "--data", "digits", "--rounds", "3",
        "--min-sites", "1", "--id", "job-1", "--personalize-epochs", "2", "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert (job["id"], job["state"], job["rounds"]) == ("job-1", "running", 3)
    assert job["sites"]["plant-a"]["status"] == "refused"
    assert "not declared" in job["sites"]["plant-a"]["reason"]

    status = running_hub.cli("fl", "status", "job-1")
    assert status.returncode == 0, status.stderr
    assert "job-1 running" in status.stdout
    assert "waiting for sites: 0 eligible online, need 1" in status.stdout
    assert "plant-a" in status.stdout  # the sites left out, with their reasons
    as_json = json.loads(running_hub.cli("fl", "status", "job-1", "--json").stdout)
    assert as_json["config"]["personalize_epochs"] == 2
    assert as_json["variants"] == {}

    listed = json.loads(running_hub.cli("fl", "ls", "--json").stdout)
    assert [j["id"] for j in listed] == ["job-1"]
    assert "job-1" in running_hub.cli("fl", "ls").stdout

    # The same id again is the same job; a different body under it is refused.
    again = running_hub.cli(
        "fl", "start", "--model", "digits", "--data", "digits", "--rounds", "3",
        "--min-sites", "1", "--id", "job-1", "--personalize-epochs", "2", "--json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    other = running_hub.cli(
        "fl", "start", "--model", "digits", "--data", "digits", "--rounds", "4", "--id", "job-1"
    )
    assert other.returncode != 0
    assert "exists with another configuration" in other.stderr

    aborted = running_hub.cli("fl", "abort", "job-1", "--reason", "wrong data set")
    assert aborted.returncode == 0, aborted.stderr
    assert "aborted" in aborted.stdout
    twice = running_hub.cli("fl", "abort", "job-1")
    assert twice.returncode != 0
    assert "already aborted" in twice.stderr
    assert "Traceback" not in twice.stderr


def test_fl_start_from_a_file_and_bad_input(running_hub: RunningHub, tmp_path: Path) -> None:
    _push_spec_model(running_hub, tmp_path)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        yaml.safe_dump(
            {"id": "from-file", "model": "digits", "data": "digits", "rounds": 5, "lr": 0.2}
        )
    )
    # Flags override the file.
    started = running_hub.cli("fl", "start", "-f", str(job_file), "--rounds", "7", "--json")
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert (job["id"], job["rounds"], job["config"]["lr"]) == ("from-file", 7, 0.2)

    for args, fragment in [
        (["--data", "digits", "--rounds", "3"], "--model is required"),
        (["--model", "digits", "--data", "digits", "--rounds", "3", "--strategy", "nope"], "nope"),
        (["--model", "digits", "--data", "digits", "--rounds", "0"], "rounds"),
        (["--model", "missing", "--data", "digits", "--rounds", "3"], "missing"),
        (
            ["--model", "digits", "--data", "digits", "--rounds", "3", "--personalize-epochs", "0"],
            "'--personalize-epochs'",
        ),
    ]:
        refused = running_hub.cli("fl", "start", *args)
        assert refused.returncode != 0, args
        assert fragment in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    listed = json.loads(running_hub.cli("fl", "ls", "--json").stdout)
    assert [j["id"] for j in listed] == ["from-file"]  # nothing half-created


def test_fl_simulate() -> None:
    simulated = subprocess.run(
        [sys.executable, "-m", "modelfleet", "fl", "simulate", "--sites", "4", "--rounds", "3",
         "--lr", "0.5", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    rounds = json.loads(simulated.stdout)["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[-1]["test"]["accuracy"] > rounds[0]["test"]["accuracy"]
