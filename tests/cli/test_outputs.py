"""What the CLI prints for a newcomer (issue 17, item 7 and the `fl start` part of item 9):
tables inside 100 columns with the names to copy whole, hints instead of empty tables, an
example in every command's --help, `policy apply` per rule, `fl start` warning at once."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from modelfleet.cli.main import app
from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub_client import HubClient
from tests.cli.conftest import RunningHub

LONG_SITE = "plant-eu-west-frankfurt-availability-zone-01"

#: Commands other sessions own; each gets its example there (the integrator empties this).
EXAMPLES_PENDING: set[str] = set()  # every command has its examples


def _commands() -> list[str]:
    """Every leaf command of the CLI, as its words (``hub key list``)."""
    found: list[str] = []

    def walk(command: object, path: list[str]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            found.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("command", [c for c in _commands() if c not in EXAMPLES_PENDING])
def test_every_help_has_an_example_and_plain_type_labels(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"modelfleet {command}" in result.output.split("Examples:")[1]
    assert "<list[" not in result.output
    assert "<bool>" not in result.output


def test_policy_apply_help_documents_the_file() -> None:
    result = CliRunner().invoke(app, ["policy", "apply", "--help"], env={"COLUMNS": "100"})
    for field in ("policies:", "kind: residency", "regions:", "allowed_jurisdictions",
                  "kind: spread", "min_distinct"):  # fmt: skip
        assert field in result.output


def test_empty_listings_say_what_to_do(running_hub: RunningHub) -> None:
    for args, hint in [
        (("site", "ls"), "no sites yet: modelfleet site add NAME -l "),
        (("model", "ls"), "no models yet: modelfleet model push "),
        (("policy", "ls"), "no policies yet: modelfleet policy apply -f "),
        (("status",), "no sites yet: modelfleet site add NAME -l "),
        (("audit", "--action", "nothing.ever"), "no audit entries matching --actor/--action"),
    ]:
        result = running_hub.cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(hint), (args, result.stdout)


def test_tables_fit_100_columns_with_names_whole(running_hub: RunningHub) -> None:
    admin = HubClient(running_hub.process.url, running_hub.token)
    admin.add_site(
        LONG_SITE,
        {"region": "eu-west", "jurisdiction": "EU", "provider": "aws", "tier": "edge",
         "rack": "r17-row-b-cage-4"},
    )  # fmt: skip
    for n in range(3):
        admin.create_token(f"dashboards-of-the-reliability-engineering-team-{n}", "viewer")
    tokens = {t.id for t in admin.list_tokens()}
    for args in (("site", "ls"), ("status",), ("token", "ls"), ("audit",)):
        result = running_hub.cli(*args, columns=100)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert all(len(line) <= 100 for line in lines), (args, result.stdout)
        if args != ("audit",):
            assert len(lines) < 10, result.stdout  # one line per row: nothing wrapped
        if args in (("site", "ls"), ("status",)):
            assert LONG_SITE in result.stdout
    listed = running_hub.cli("token", "ls", columns=100).stdout
    assert all(token_id in listed for token_id in tokens)  # every id whole, to copy
    assert "…" in listed  # the long names gave way
    assert "--json" in listed.splitlines()[-1]  # and the note says where the rest is


def test_policy_apply_says_created_changed_unchanged(
    running_hub: RunningHub, tmp_path: Path
) -> None:
    def rules(min_distinct: int) -> Path:
        path = tmp_path / "policy.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "policies": [
                        {"name": "eu-stays", "kind": "residency", "training_regions": ["EU"],
                         "allowed_jurisdictions": ["EU"]},
                        {"name": "spread", "kind": "spread", "label": "provider",
                         "min_distinct": min_distinct},
                    ]
                }
            )
        )  # fmt: skip
        return path

    first = running_hub.cli("policy", "apply", "-f", str(rules(2)))
    assert first.stdout.splitlines() == ["policy eu-stays: created", "policy spread: created"]
    again = running_hub.cli("policy", "apply", "-f", str(rules(3)))
    assert again.stdout.splitlines() == ["policy eu-stays: unchanged", "policy spread: changed"]
    same = running_hub.cli("policy", "apply", "-f", str(rules(3)))
    assert same.stdout.splitlines() == [
        "policy eu-stays: unchanged",
        "policy spread: unchanged",
        "no changes",
    ]


def test_fl_start_warns_when_no_site_qualifies(running_hub: RunningHub, tmp_path: Path) -> None:
    spec = ModelSpec(family="softmax", features=4, classes=2)
    path = tmp_path / "m.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    admin = HubClient(running_hub.process.url, running_hub.token)
    admin.push(path, "digits")
    admin.add_site("plant-a", {"tier": "edge"})  # never enrolled, no consent declared

    nobody = running_hub.cli(
        "fl", "start", "--model", "digits", "--data", "d", "--rounds", "1", "--sites", "tier=cloud"
    )
    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stderr.startswith(
        "warning: waiting for sites: 0 eligible online, need 1; "
        "the selector 'tier=cloud' has no site (modelfleet site ls); "
        "the job fails if no round opens within 600 s"
    ), nobody.stderr

    refused = running_hub.cli("fl", "start", "--model", "digits", "--data", "d", "--rounds", "1")
    assert refused.returncode == 0, refused.stderr
    assert "left out: plant-a refused: the site has not declared federated-learning consent" in (
        refused.stderr
    )
    assert refused.stderr.count("\n") == 1  # one warning line; the job line is on stdout
    assert refused.stdout.startswith("job fl-")
