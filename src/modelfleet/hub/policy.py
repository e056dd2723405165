"""Governance rules of the fleet: residency and spread.

* **residency** — data from any of ``regions`` may only go to sites whose ``label`` (default
  ``jurisdiction``) is one of ``allowed_jurisdictions``. One rule governs both places data
  goes: a model *trained* on that data runs only there (checked here, when a deployment is
  planned or a site pinned), and a *request* carrying that data is routed only there (the
  hub's directory carries the rule to the SDK and the gateway, which enforce it offline:
  ``routing/residency.py``). This is how "EU data, and models made from it, stay at EU
  sites" is written. ``training_regions`` is the older name of ``regions`` and is still
  accepted. Regions are data-region words (``EU``, ``IN``, ``eu-west``: the grammar of
  ``check_data_region``), compared case-insensitively. A rule naming a jurisdiction also
  covers the finer regions the sites' labels put in it (``region=eu-west,
  jurisdiction=EU``: a rule for ``EU`` covers a version trained on ``eu-west`` data). A
  region no rule covers is unrestricted for placements and stays in its own jurisdiction
  for requests (docs/residency.md).
* **spread** — a deployment (of the listed ``models``, default every model) must cover at
  least ``min_distinct`` values of ``label``, e.g. two providers, so one provider's outage
  never takes a model down everywhere.

A refusal names the rule and every offending site, because an operator fixes a placement
site by site. The site agent checks residency again against its own local policy file
(``site/policy.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from modelfleet.errors import InvalidInput, PolicyViolation
from modelfleet.hub.store.records import SiteRecord
from modelfleet.refs import check_name
from modelfleet.routing.residency import check_data_region, region_jurisdictions


class ResidencyRule(BaseModel):
    """Data from ``regions`` (a model trained on it, a request carrying it) goes only to
    sites whose ``label`` is one of ``allowed_jurisdictions``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["residency"] = "residency"
    regions: list[str] = Field(
        min_length=1,
        validation_alias=AliasChoices("regions", "training_regions"),
        description="Data regions (training data and request data); `training_regions` "
        "is accepted as the older name.",
    )
    allowed_jurisdictions: list[str] = Field(min_length=1)
    label: str = "jurisdiction"
    description: str = ""

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        # The request grammar: a rule whose region no request could carry would be dead.
        try:
            return [check_data_region(r, "region") for r in value]
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc

    def spec(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "kind"})

    def covers(
        self, regions: Sequence[str], jurisdictions: Mapping[str, frozenset[str]] | None = None
    ) -> list[str]:
        """Which of ``regions`` (a version's training regions) this rule covers, sorted: the
        ones it names, and the ones whose jurisdiction by site labels it names
        (``jurisdictions``: :func:`region_jurisdictions` of the fleet's sites)."""
        mine = set(self.regions)
        known = jurisdictions or {}
        return sorted(
            r for r in {r.upper() for r in regions} if r in mine or known.get(r, set()) & mine
        )


class SpreadRule(BaseModel):
    """A deployment must cover at least ``min_distinct`` values of ``label``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["spread"] = "spread"
    label: str
    min_distinct: int = Field(ge=2)
    models: list[str] = Field(default_factory=list, description="Empty: every model.")
    description: str = ""

    def spec(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "kind"})


Rule = Annotated[ResidencyRule | SpreadRule, Field(discriminator="kind")]
_RULE = TypeAdapter(Rule)


def parse_rule(raw: dict[str, Any]) -> ResidencyRule | SpreadRule:
    """Validate one rule document; ``InvalidInput`` names the field that is wrong."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"a policy must be a mapping, got {type(raw).__name__}")
    try:
        rule = _RULE.validate_python(raw)
    except ValidationError as exc:
        raise InvalidInput(f"invalid policy {raw.get('name', '?')!r}: {describe(exc)}") from exc
    check_name(rule.name, "policy name")
    return rule


def rule_from_record(name: str, kind: str, spec: dict[str, Any]) -> ResidencyRule | SpreadRule:
    return parse_rule({"name": name, "kind": kind, **spec})


def parse_policy_document(doc: Any) -> list[ResidencyRule | SpreadRule]:
    """``{"policies": [...]}`` (or a bare list) -> rules, names unique."""
    items = doc.get("policies") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InvalidInput("a policy file holds `policies:` followed by a list of rules")
    rules = [parse_rule(item) for item in items]
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"policy names must be unique; repeated: {', '.join(dupes)}")
    return rules


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Violation:
    """One rule broken at one site (``site`` is None for a rule about the whole set)."""

    rule: str
    kind: str
    site: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "site": self.site, "detail": self.detail}


def check_residency(
    rules: Sequence[ResidencyRule | SpreadRule],
    training_regions: Sequence[str],
    sites: Sequence[SiteRecord],
    fleet: Sequence[SiteRecord] | None = None,
) -> list[Violation]:
    """Every (rule, site) pair where a site may not run a model with these regions.
    ``fleet``: every site, whose labels say which jurisdiction each region is in (default
    ``sites``)."""
    found = []
    regions = {r.upper() for r in training_regions}
    jurisdictions = region_jurisdictions(s.labels for s in (fleet if fleet is not None else sites))
    for rule in rules:
        if isinstance(rule, ResidencyRule) and not regions:
            # No provenance: the rule cannot tell whether this model holds its regions'
            # data, and passing it silently would be the leak the rule exists to stop.
            found.append(
                Violation(
                    rule.name,
                    rule.kind,
                    None,
                    "the version records no training regions, so this rule cannot be "
                    "checked; push it with its regions (--training-region REGION)",
                )
            )
            continue
        covered = (
            rule.covers(list(regions), jurisdictions) if isinstance(rule, ResidencyRule) else []
        )
        if not isinstance(rule, ResidencyRule) or not covered:
            continue
        allowed = {j.upper() for j in rule.allowed_jurisdictions}
        trained = ",".join(covered)
        for site in sites:
            value = site.labels.get(rule.label)
            if value is None or value.upper() not in allowed:
                have = f"{rule.label}={value}" if value else f"no {rule.label} label"
                found.append(
                    Violation(
                        rule.name,
                        rule.kind,
                        site.name,
                        f"trained on {trained} data, allowed only where {rule.label} in "
                        f"({','.join(sorted(allowed))}); site has {have}",
                    )
                )
    return found


def check_spread(
    rules: Sequence[ResidencyRule | SpreadRule], model: str, sites: Sequence[SiteRecord]
) -> list[Violation]:
    found = []
    for rule in rules:
        if not isinstance(rule, SpreadRule) or (rule.models and model not in rule.models):
            continue
        values = sorted({s.labels[rule.label] for s in sites if rule.label in s.labels})
        if len(values) < rule.min_distinct:
            covered = ", ".join(
                f"{s.name} ({rule.label}={s.labels.get(rule.label)})" for s in sites
            )
            found.append(
                Violation(
                    rule.name,
                    rule.kind,
                    None,
                    f"needs at least {rule.min_distinct} distinct {rule.label} values, the "
                    f"deployment covers {len(values)} ({', '.join(values) or 'none'}): "
                    f"{covered or 'no sites'}",
                )
            )
    return found


def refuse(subject: str, violations: Sequence[Violation]) -> PolicyViolation:
    """One error naming every rule and every offending site."""
    lines = []
    for rule in sorted({v.rule for v in violations}):
        mine = [v for v in violations if v.rule == rule]
        kind = mine[0].kind
        if kind == "residency" and mine[0].site is None:
            lines.append(f"residency rule {rule!r}: {mine[0].detail}")
        elif kind == "residency":
            sites = "; ".join(f"{v.site}: {v.detail}" for v in mine)
            lines.append(f"residency rule {rule!r} refuses site(s) {sites}")
        else:
            lines.append(f"spread rule {rule!r}: {mine[0].detail}")
    return PolicyViolation(f"{subject} refused by policy — " + " | ".join(lines))
