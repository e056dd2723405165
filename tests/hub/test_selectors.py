from __future__ import annotations

import pytest

from modelfleet.errors import InvalidInput
from modelfleet.hub.selectors import parse_selector

EU = {"region": "eu-west", "jurisdiction": "EU", "provider": "aws", "tier": "edge"}
US = {"region": "us-east", "jurisdiction": "US", "provider": "gcp", "tier": "cloud"}
UK = {"region": "uk-south", "jurisdiction": "UK", "provider": "azure"}


@pytest.mark.parametrize(
    ("text", "matching"),
    [
        ("region=eu-west,tier=edge", ["EU"]),
        ("region==eu-west", ["EU"]),
        ("jurisdiction in (EU,UK)", ["EU", "UK"]),
        ("jurisdiction in ( EU , UK ),provider!=aws", ["UK"]),
        ("provider!=aws", ["US", "UK"]),
        ("jurisdiction notin (EU)", ["US", "UK"]),
        ("tier", ["EU", "US"]),
        ("!tier", ["UK"]),
        ("", ["EU", "US", "UK"]),
    ],
)
def test_selector_matches(text: str, matching: list[str]) -> None:
    selector = parse_selector(text)
    sites = {"EU": EU, "US": US, "UK": UK}
    assert [n for n, labels in sites.items() if selector.matches(labels)] == matching


@pytest.mark.parametrize("text", ["region=", "a in ()", "a in (b", "a)", "region =~ x", "a b"])
def test_bad_selectors(text: str) -> None:
    if text == "region=":
        # an empty value is legal (matches an empty label value), like Kubernetes
        assert parse_selector(text).matches({"region": ""})
        return
    with pytest.raises(InvalidInput):
        parse_selector(text)


def test_explain_names_the_failing_term() -> None:
    selector = parse_selector("jurisdiction in (EU,UK),tier=edge")
    assert selector.explain(EU) is None
    assert selector.explain(US) == "jurisdiction in (EU,UK) (site has jurisdiction=US)"
    assert selector.explain(UK) == "tier=edge (no tier)"
    assert str(selector) == "jurisdiction in (EU,UK),tier=edge"
