"""Region words compare the same way at every hop (issue 17 item 3): a residency rule,
a version's training regions and a site's own policy match case-insensitively, and a rule
written with the older ``training_regions`` field means what ``regions`` means."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelfleet.errors import PolicyViolation
from modelfleet.hub.policy import check_residency, parse_policy_document
from modelfleet.hub.store.records import SiteRecord
from modelfleet.site.policy import load_site_policy


def site(name: str, jurisdiction: str) -> SiteRecord:
    now = datetime.now(UTC)
    return SiteRecord(name, {"jurisdiction": jurisdiction}, now, now, None, now, {}, 1)


def test_old_and_new_field_names_make_the_same_rule() -> None:
    old, new = parse_policy_document(
        {
            "policies": [
                {"name": "a", "kind": "residency", "training_regions": ["in"],
                 "allowed_jurisdictions": ["IN"]},
                {"name": "b", "kind": "residency", "regions": ["IN"],
                 "allowed_jurisdictions": ["IN"]},
            ]
        }
    )  # fmt: skip
    assert old.spec() == new.spec()
    assert old.spec()["regions"] == ["IN"]


def test_placement_matches_regions_and_labels_case_insensitively() -> None:
    [rule] = parse_policy_document(
        [{"name": "in-only", "kind": "residency", "regions": ["ap-south"],
          "allowed_jurisdictions": ["in"]}]
    )  # fmt: skip
    sites = [site("mumbai", "IN"), site("dublin", "EU")]
    [violation] = check_residency([rule], ["AP-SOUTH"], sites)
    assert violation.site == "dublin"
    assert check_residency([rule], ["eu-west"], sites) == []  # another region: not this rule


def test_the_site_policy_accepts_regions_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "site-policy.yaml"
    path.write_text("jurisdiction: EU\naccepted_training_regions: [EU]\n")
    policy = load_site_policy(path)
    policy.check({"name": "m", "version": 1, "training_regions": ["eu"]})
    with pytest.raises(PolicyViolation, match="US"):
        policy.check({"name": "m", "version": 2, "training_regions": ["eu", "US"]})
