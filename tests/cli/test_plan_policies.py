"""``deploy --plan`` lists every policy it evaluated with its verdict, and warns about a
rule that matches no model (issue 17: a policy for ``EU`` while versions record
``eu-west`` protected nothing, silently). One policy format: ``regions`` (or the older
``training_regions``) -> ``allowed_jurisdictions``. Through the CLI, against a real hub."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.conftest import RunningHub

POLICY = """
policies:
  - name: eu-data-stays-in-eu
    kind: residency
    training_regions: [EU]          # the older field name: still valid
    allowed_jurisdictions: [EU]
  - name: two-providers
    kind: spread
    label: provider
    min_distinct: 2
    models: [no-such-model]
"""


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_plan_lists_each_policy_and_warns_about_rules_that_match_nothing(
    running_hub: RunningHub, tiny_onnx, tmp_path: Path
) -> None:
    hub = running_hub
    for name, labels in {
        "eu-1": ["region=eu-west", "jurisdiction=EU", "provider=aws"],
        "us-1": ["region=us-east", "jurisdiction=US", "provider=gcp"],
    }.items():
        ok(hub.cli("site", "add", name, *(arg for label in labels for arg in ("-l", label))))
    # A version trained on data from a region no site is in, and no rule names.
    push = ("model", "push", "--name", "pump", "--training-region")
    ok(hub.cli(*push, "ap-south", str(tiny_onnx())))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ok(hub.cli("policy", "apply", "-f", str(policy)))
    listed = ok(hub.cli("policy", "ls"))  # the rule, stored as `regions`, lists as before
    assert "eu-data-stays-in-eu" in listed
    assert "EU" in listed

    # The sites never came up, so the plan has nowhere to roll out to: it may be refused
    # for that, and still lists the policies.
    out = ok_or_refused(hub.cli("deploy", "pump:1", "--plan"))
    assert "policies evaluated" in out
    assert "eu-data-stays-in-eu" in out
    assert "not applicable" in out
    assert "residency rule 'eu-data-stays-in-eu' matches no model" in out
    assert "spread rule 'two-providers' matches no model" in out
    planned = json.loads(ok_or_refused(hub.cli("deploy", "pump:1", "--plan", "--json")))
    verdicts = {p["rule"]: p["verdict"] for p in planned["policies"]}
    assert verdicts == {"eu-data-stays-in-eu": "not applicable", "two-providers": "not applicable"}
    assert len(planned["warnings"]) == 2

    # The README's words: trained on eu-west data. The sites' labels put eu-west in the EU,
    # so the EU rule covers it: refused at the US site, passed at the EU one.
    ok(hub.cli(*push, "eu-west", str(tiny_onnx())))
    planned = json.loads(ok_or_refused(hub.cli("deploy", "pump:2", "--plan", "--json")))
    [residency] = [p for p in planned["policies"] if p["kind"] == "residency"]
    assert residency["verdict"] == "refused"
    assert "us-1" in residency["detail"]
    assert not any("eu-data-stays-in-eu" in w for w in planned["warnings"])
    planned = json.loads(
        ok_or_refused(hub.cli("deploy", "pump:2", "--to", "jurisdiction=EU", "--plan", "--json"))
    )
    [residency] = [p for p in planned["policies"] if p["kind"] == "residency"]
    assert residency["verdict"] == "pass"
    assert "EU-WEST" in residency["detail"]
    assert planned["violations"] == []


def ok_or_refused(run: subprocess.CompletedProcess[str]) -> str:
    """A plan that would be refused may exit non-zero; its JSON is printed either way."""
    assert "Traceback" not in run.stderr
    return run.stdout


def test_a_policy_file_with_a_region_no_request_could_carry_is_refused_in_one_line(
    running_hub: RunningHub, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policies:\n  - name: typo\n    kind: residency\n    regions: [eu west]\n"
        "    allowed_jurisdictions: [EU]\n"
    )
    run = running_hub.cli("policy", "apply", "-f", str(bad))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "regions" in lines[0]
    assert "A-Z, 0-9 and '-'" in lines[0]
    both = tmp_path / "both.yaml"
    both.write_text(
        "policies:\n  - name: twice\n    kind: residency\n    regions: [EU]\n"
        "    training_regions: [EU]\n    allowed_jurisdictions: [EU]\n"
    )
    run = running_hub.cli("policy", "apply", "-f", str(both))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "training_regions" in run.stderr
