"""Strategies, gates and policies as pure functions: plans are validated before they start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, PolicyViolation
from modelfleet.hub.policy import check_residency, check_spread, parse_policy_document, refuse
from modelfleet.hub.rollout.gates import Figures, evaluate, parse_gates
from modelfleet.hub.rollout.strategies import build_waves, parse_strategy
from modelfleet.hub.store.records import SiteRecord
from modelfleet.site.policy import load_site_policy


def site(name: str, **labels: str) -> SiteRecord:
    now = datetime.now(UTC)
    return SiteRecord(name, labels, now, now, None, now, {}, 1)


SITES = [
    site("a1", region="eu-west", jurisdiction="EU", provider="aws"),
    site("a2", region="eu-west", jurisdiction="EU", provider="gcp"),
    site("b1", region="us-east", jurisdiction="US", provider="aws"),
    site("c1", region="ap-south", jurisdiction="IN", provider="azure"),
]


def test_strategies_make_reproducible_waves() -> None:
    canary = parse_strategy({"kind": "canary", "canary": "b1", "then": [50, 100]})
    assert build_waves(canary, SITES) == [["b1"], ["a1", "a2"], ["c1"]]
    by_selector = parse_strategy({"kind": "canary", "canary": "region=eu-west"})
    assert build_waves(by_selector, SITES) == [["a1", "a2"], ["b1", "c1"]]
    waves = parse_strategy(
        {"kind": "waves", "label": "region", "order": ["eu-west", "us-east", "ap-south"]}
    )
    assert build_waves(waves, SITES) == [["a1", "a2"], ["b1"], ["c1"]]
    percent = parse_strategy({"kind": "percent", "percentages": [25, 50, 100]})
    assert build_waves(percent, SITES) == [["a1"], ["a2"], ["b1", "c1"]]
    expo = parse_strategy({"kind": "exponential", "start": 1, "factor": 2})
    assert build_waves(expo, SITES) == [["a1"], ["a2"], ["b1", "c1"]]
    assert build_waves(parse_strategy({}), SITES) == [["a1", "a2", "b1", "c1"]]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"kind": "percent", "percentages": [50, 20, 100]}, "increase"),
        ({"kind": "percent", "percentages": [10, 150]}, r"\(0, 100\]"),
        ({"kind": "percent", "percentages": [10, 50]}, "last percentage must be 100"),
        ({"kind": "waves", "label": "region"}, "order"),
        ({"kind": "canary", "bake_s": 60, "progress_deadline_s": 10}, "at least bake_s"),
        ({"kind": "blue-green"}, "kind"),
        ({"kind": "canary", "cannary": "x"}, "cannary"),
    ],
)
def test_malformed_strategies_refused(raw: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_strategy(raw)


def test_every_step_must_select_a_site() -> None:
    with pytest.raises(InvalidInput, match="selects no new site"):
        build_waves(parse_strategy({"kind": "percent", "percentages": [10, 20, 100]}), SITES)
    order = {"kind": "waves", "label": "region", "order": ["eu-west", "us-east", "mars"]}
    with pytest.raises(InvalidInput, match="not in the wave order"):
        build_waves(parse_strategy(order), SITES)
    with pytest.raises(InvalidInput, match="mars selects no online site"):
        build_waves(parse_strategy(order), SITES[:3])
    with pytest.raises(InvalidInput, match="neither"):
        build_waves(parse_strategy({"kind": "canary", "canary": "region=mars"}), SITES)


def test_gates() -> None:
    gates = parse_gates({"max_error_rate": 0.05, "max_p99_ms": 50, "min_requests": 20})
    assert evaluate(gates, Figures(10, 0, 5.0), None).outcome == "wait"
    assert evaluate(gates, Figures(100, 1, 5.0), None).outcome == "pass"
    failed = evaluate(gates, Figures(100, 30, 5.0), None)
    assert (failed.outcome, failed.gate) == ("fail", "max_error_rate")
    assert evaluate(gates, Figures(100, 0, 80.0), None).gate == "max_p99_ms"
    relative = parse_gates({"max_p99_ratio": 2, "min_requests": 1})
    slow = evaluate(relative, Figures(10, 0, 30.0), Figures(10, 0, 10.0))
    assert slow.gate == "max_p99_ratio"
    assert evaluate(relative, Figures(10, 0, 15.0), Figures(10, 0, 10.0)).outcome == "pass"
    drift = parse_gates({"max_drift": 0.2})
    assert evaluate(drift, Figures(10, 0, None, 0.5), None).gate == "max_drift"
    # No gate at all: nothing to wait for.
    assert evaluate(parse_gates({}), Figures(), None).outcome == "pass"
    for bad in ({"max_error_rate": 2}, {"min_requests": -1}, {"max_p99_ms": 0}, {"p99": 1}):
        with pytest.raises(InvalidInput):
            parse_gates(bad)


def test_relative_gate_needs_traffic_on_both_sides_and_explains_itself() -> None:
    gates = parse_gates({"max_p99_ratio": 3, "min_requests": 50})
    # Too few baseline requests: no verdict either way, and the reason says so.
    thin = evaluate(gates, Figures(60, 0, 500.0), Figures(49, 0, 2.0))
    assert (thin.outcome, thin.gate) == ("wait", "max_p99_ratio")
    assert "49 request(s)" in thin.message
    assert "50 needed" in thin.message
    slow = evaluate(gates, Figures(60, 0, 500.0), Figures(400, 0, 2.0))
    assert (slow.outcome, slow.gate) == ("fail", "max_p99_ratio")
    assert "p99 500.0 ms" in slow.message
    assert "2.0 ms" in slow.message
    assert "250.0x > 3x" in slow.message
    assert "60 vs 400 requests" in slow.message
    assert slow.as_dict()["baseline"]["p99_ms"] == 2.0
    # Within the noise allowance (10 ms by default) a 5x ratio on a 1 ms model is jitter...
    assert evaluate(gates, Figures(60, 0, 5.0), Figures(400, 0, 1.0)).outcome == "pass"
    # ...unless the operator says differences that small matter.
    strict = parse_gates({"max_p99_ratio": 3, "min_requests": 50, "p99_noise_ms": 0})
    assert evaluate(strict, Figures(60, 0, 5.0), Figures(400, 0, 1.0)).outcome == "fail"
    held = evaluate(gates, Figures(60, 0, 4.0), Figures(400, 0, 2.0))
    assert held.outcome == "pass"
    assert "4.0 ms" in held.message
    assert "2.0 ms" in held.message


def test_policies_name_rule_and_sites() -> None:
    rules = parse_policy_document(
        {
            "policies": [
                {
                    "name": "eu-data-stays-in-eu",
                    "kind": "residency",
                    "training_regions": ["EU"],
                    "allowed_jurisdictions": ["EU"],
                },
                {"name": "two-providers", "kind": "spread", "label": "provider", "min_distinct": 2},
            ]
        }
    )
    violations = check_residency(rules, ["EU"], SITES)
    assert [v.site for v in violations] == ["b1", "c1"]
    assert check_residency(rules, ["US"], SITES) == []
    # A version with no recorded provenance cannot pass a residency rule by silence.
    [unknown] = check_residency(rules, [], SITES)
    assert (unknown.rule, unknown.site) == ("eu-data-stays-in-eu", None)
    assert "no training regions" in refuse("deployment pump", [unknown]).message
    assert check_residency([rules[1]], [], SITES) == []  # no residency rule: nothing to check
    error = refuse("deployment pump", violations)
    assert isinstance(error, PolicyViolation)
    assert "eu-data-stays-in-eu" in error.message
    assert "b1" in error.message
    assert "c1" in error.message
    assert check_spread(rules, "pump", SITES[:1])[0].rule == "two-providers"
    assert check_spread(rules, "pump", SITES[:2]) == []
    with pytest.raises(InvalidInput, match="unique"):
        parse_policy_document({"policies": [rules[0].model_dump()] * 2})
    with pytest.raises(InvalidInput, match="min_distinct"):
        parse_policy_document(
            {"policies": [{"name": "x", "kind": "spread", "label": "p", "min_distinct": 1}]}
        )


def test_site_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("jurisdiction: EU\naccepted_training_regions: [EU, UK]\n")
    policy = load_site_policy(path)
    policy.check({"name": "m", "version": 1, "training_regions": ["EU"]})
    with pytest.raises(PolicyViolation, match="trained on data from US"):
        policy.check({"name": "m", "version": 2, "training_regions": ["EU", "US"]})
    with pytest.raises(PolicyViolation, match="no training regions"):
        policy.check({"name": "m", "version": 3, "training_regions": []})
    path.write_text("jurisdiction: [broken\n")
    with pytest.raises(PolicyViolation, match="cannot be read"):
        load_site_policy(path)
