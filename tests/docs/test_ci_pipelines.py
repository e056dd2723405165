"""docs/ci/: the GitHub Actions workflow and the GitLab CI file, run as a CI runner would run
them, against a real hub and a real site on loopback (TLS, an operator token, the CA from a
"secret").

Both files must hold the same shell steps; those run one by one through ``bash -e -o
pipefail`` (as GitHub runs a ``run:`` step and GitLab a ``script:`` line) in a fresh
directory holding ``docs/ci/train.py``, with the environment the files declare: the secrets
(hub URL, token, CA) as a CI secret store would set them, the provenance variables as the CI
would. Only ``pip install`` does not run (the test's venv is the installed modelfleet).

A green run moves ``production`` and ends with the rollout succeeded; a run whose rollout
fails its gate ends the job with ``rollout wait``'s code for failed (3) and the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import trust_fleet_ca, write_tiny_onnx
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "docs" / "ci"
MODEL = "machine-health"
HUB_ENV = {"MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3"}
SITE_ENV = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "1",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
}
#: What each CI sets from its own context; the test plays the CI.
PROVENANCE = {"GIT_SHA": "3f2a9c1d0e", "PIPELINE_URL": "https://ci.example/acme/ml/pipelines/42"}


def _command(text: str) -> str:
    """One shell step as the runner reads it: continuation lines joined, spaces collapsed."""
    return " ".join(text.replace("\\\n", " ").split())


def github_job() -> dict[str, Any]:
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    (job,) = doc["jobs"].values()
    return dict(job)


def gitlab_job() -> dict[str, Any]:
    doc = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    (job,) = (v for k, v in doc.items() if isinstance(v, dict) and "script" in v)
    return dict(job)


def github_steps() -> list[str]:
    return [_command(step["run"]) for step in github_job()["steps"] if "run" in step]


def gitlab_steps() -> list[str]:
    return [_command(line) for line in gitlab_job()["script"]]


def test_both_files_run_the_same_steps_with_secrets_from_the_ci() -> None:
    steps = github_steps()
    assert steps == gitlab_steps()
    verbs = [" ".join(s.split()[:3]) for s in steps if s.startswith("modelfleet ")]
    assert verbs == [
        "modelfleet model push",
        "modelfleet model alias",
        f"modelfleet deploy {MODEL}@production",
    ]
    assert "--wait" in steps[-1]
    assert "python docs/ci/train.py" in " ".join(steps)
    # The hub URL, the token and the CA come from the CI's secret store, never a file.
    github_env = github_job()["env"]
    for name in ("MODELFLEET_HUB_URL", "MODELFLEET_TOKEN", "MODELFLEET_CA_PEM"):
        assert github_env[name] == f"${{{{ secrets.{name} }}}}"
        assert name not in gitlab_job()["variables"]  # a project CI/CD variable
    for name in ("MODELFLEET_CA_FILE", "GIT_SHA", "PIPELINE_URL"):
        assert name in github_env
        assert name in gitlab_job()["variables"]
    assert not any(re.search(r"https?://|--token", s) for s in steps), steps


def test_the_guide_shows_the_files_as_they_are() -> None:
    guide = (ROOT / "docs" / "ci.md").read_text()
    for name in ("github-actions.yml", "gitlab-ci.yml", "train.py"):
        assert (CI / name).read_text().rstrip() + "\n```" in guide, name


@dataclass
class Fleet:
    hub: HubProcess
    site: SiteProcess
    admin: HubClient
    operator: str
    infer: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A hub and one site; ``machine-health@production`` deployed to it with no bake."""
    root = tmp_path_factory.mktemp("ci-fleet")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub", extra_env=HUB_ENV).start()
    trusted = pytest.MonkeyPatch()
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    site: SiteProcess | None = None
    try:
        token = admin.add_site("plant-a", {"region": "eu-west"})["enrollment_token"]
        site = SiteProcess(root / "plant-a", hub.url, token, extra_env=SITE_ENV).start(60)
        admin.push(write_tiny_onnx(root / "v1.onnx"), MODEL, alias="production")
        result = admin.deploy(
            {"ref": f"{MODEL}@production", "selector": "", "strategy": {"bake_s": 0}}
        )
        wait_for(
            lambda: admin.get_rollout(result["rollout"]["id"])["state"] == "succeeded",
            "the first version rolled out",
            timeout=60,
        )
        yield Fleet(
            hub,
            site,
            admin,
            admin.create_token("ci", "operator").token,
            admin.create_token("traffic", "infer").token,
        )
    finally:
        if site is not None:
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()


@dataclass(frozen=True)
class Step:
    command: str
    code: int
    stdout: str
    stderr: str


def run_pipeline(fleet: Fleet, workdir: Path, git_sha: str = PROVENANCE["GIT_SHA"]) -> list[Step]:
    """The steps in order until one fails, as the CI runs them. A run on another commit
    needs another ``git_sha``: the same model with the same tags is the retry of the
    latest version, and the hub answers that version instead of making a new one."""
    (workdir / "docs" / "ci").mkdir(parents=True)
    shutil.copy(CI / "train.py", workdir / "docs" / "ci" / "train.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFLEET_", "SSL_CERT"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PROVENANCE, GIT_SHA=git_sha)
    env.update(
        MODELFLEET_HUB_URL=fleet.hub.url,
        MODELFLEET_TOKEN=fleet.operator,
        MODELFLEET_CA_PEM=fleet.hub.ca_file.read_text(),
        MODELFLEET_CA_FILE=str(gitlab_job()["variables"]["MODELFLEET_CA_FILE"]),
    )
    done: list[Step] = []
    for command in github_steps():
        if command.startswith("pip install"):
            continue
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        done.append(Step(command, proc.returncode, proc.stdout, proc.stderr))
        print(f"$ {command}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        if proc.returncode:
            break
    return done


@contextmanager
def traffic(fleet: Fleet) -> Iterator[None]:
    """Requests to the site, ~30/s, so the gates have figures to judge."""
    stop = threading.Event()
    body = {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [70, 0.3, 5, 1500]}]
    }

    def send() -> None:
        auth = {"Authorization": f"Bearer {fleet.infer}"}
        with httpx.Client(timeout=10, headers=auth) as http:
            while not stop.is_set():
                # A request the site drops while it swaps versions: the next one goes on.
                with contextlib.suppress(httpx.TransportError):
                    http.post(f"{fleet.site.url}/v2/models/{MODEL}/infer", json=body)
                stop.wait(0.03)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_the_pipeline_pushes_with_provenance_moves_the_alias_and_waits(
    fleet: Fleet, tmp_path: Path
) -> None:
    before = fleet.admin.resolve(f"{MODEL}@production")["version"]
    steps = run_pipeline(fleet, tmp_path)
    assert [s.code for s in steps] == [0] * len(steps), steps[-1]
    assert len(steps) == len(github_steps()) - 1  # all but pip install ran

    version = fleet.admin.resolve(f"{MODEL}@production")
    assert version["version"] == before + 1
    assert version["tags"] == {
        "git_sha": PROVENANCE["GIT_SHA"],
        "pipeline_url": PROVENANCE["PIPELINE_URL"],
    }
    assert version["metrics"]["accuracy"] > 0.7
    (rollout,) = [r for r in fleet.admin.list_rollouts() if r["to_version"] == version["version"]]
    assert rollout["state"] == "succeeded"
    waited = steps[-1]
    assert f"rollout {rollout['id']} started" in waited.stdout
    assert f"{MODEL} {before} -> {version['version']}: succeeded" in waited.stdout


def test_a_rollout_that_fails_its_gate_fails_the_job_with_the_reason(
    fleet: Fleet, tmp_path: Path
) -> None:
    current = fleet.admin.resolve(f"{MODEL}@production")["version"]
    # The same version with a p99 gate no real request meets: no rollout now, the gate kept.
    kept = fleet.admin.deploy(
        {"ref": f"{MODEL}@production", "gates": {"max_p99_ms": 0.001, "min_requests": 5}}
    )
    assert kept["rollout"] is None
    with traffic(fleet):
        steps = run_pipeline(fleet, tmp_path, git_sha="9b1e44f07a")
    *passed, waited = steps
    assert [s.code for s in passed] == [0] * len(passed)
    assert waited.command.startswith(f"modelfleet deploy {MODEL}@production --wait")
    assert waited.code == 3, waited
    assert "failed: " in waited.stderr
    assert "max_p99_ms" in waited.stderr or "p99" in waited.stderr, waited.stderr
    assert "Traceback" not in waited.stderr
    # The alias stays where the pipeline put it; the site is back on the last good version.
    moved = fleet.admin.resolve(f"{MODEL}@production")["version"]
    assert moved == current + 1
    (rollout,) = [r for r in fleet.admin.list_rollouts() if r["to_version"] == moved]
    assert rollout["state"] == "failed"
    # `rollout wait` on the finished rollout says the same, with the same code.
    again = subprocess.run(
        [sys.executable, "-m", "modelfleet", "rollout", "wait", rollout["id"], "--timeout", "30"],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELFLEET_HUB_URL": fleet.hub.url, "MODELFLEET_TOKEN": fleet.operator},
        timeout=60,
    )
    assert again.returncode == 3, again
    assert f"rollout {rollout['id']} ({MODEL} {current} -> {moved}) failed: " in again.stderr


def cli(fleet: Fleet, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MODELFLEET_HUB_URL": fleet.hub.url, "MODELFLEET_TOKEN": fleet.operator}
    return subprocess.Popen(
        [sys.executable, "-m", "modelfleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_the_codes_a_pipeline_reads_timeout_pause_and_nothing_to_roll_out(
    fleet: Fleet, tmp_path: Path
) -> None:
    name = "ci-codes"  # a deployment of its own: the pipeline tests' gates do not apply
    fleet.admin.push(write_tiny_onnx(tmp_path / "v1.onnx", offset=3.0), name)
    first = fleet.admin.deploy({"ref": f"{name}:1", "strategy": {"bake_s": 0}})
    code, out, err = finished(cli(fleet, "rollout", "wait", first["rollout"]["id"]))
    assert code == 0, (out, err)
    code, out, _ = finished(cli(fleet, "deploy", f"{name}:1", "--wait"))
    assert code == 0
    assert "no version change" in out
    assert "nothing to wait for" in out
    # A version that waits for far more requests than it gets: it bakes until stopped.
    fleet.admin.push(write_tiny_onnx(tmp_path / "v2.onnx", offset=9.0), name)
    started = fleet.admin.deploy({"ref": f"{name}:2", "gates": {"min_requests": 1_000_000}})
    rid = started["rollout"]["id"]
    code, out, err = finished(cli(fleet, "rollout", "wait", rid, "--timeout", "2"))
    assert code == 7, (out, err)
    assert "still running at wave 1/1 after --timeout 2s" in err
    assert "running, wave 1/1: requests 0/1000000" in out
    fleet.admin.rollout_action(rid, "pause")
    code, out, err = finished(cli(fleet, "rollout", "wait", rid, "--on-pause", "exit"))
    assert code == 6, (out, err)
    assert f"rollout resume|promote {rid}" in err
    # By default a pause is waited through: here until an operator aborts it.
    waiting = cli(fleet, "rollout", "wait", rid, "--timeout", "60", "--interval", "0.2")
    assert waiting.stdout is not None
    assert waiting.stderr is not None
    lines = [waiting.stdout.readline(), waiting.stdout.readline()]  # the verdict, the state
    assert ": paused, wave 1/1" in lines[1], lines
    assert "paused: paused by" in waiting.stderr.readline()  # still waiting, and says so
    fleet.admin.rollout_action(rid, "abort")
    code, out, err = finished(waiting)
    assert code == 4, (out, err)
    assert f"rollout {rid} ({name} 1 -> 2) aborted: " in err
