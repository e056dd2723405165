"""Residency for requests: which sites may receive data from which data region.

One model governs models and requests alike (``docs/residency.md``). A *data region* says
where data comes from (``EU``, ``IN``, ``eu-west``...); a site's ``jurisdiction`` label says
under whose law it runs. The fleet's residency **policies** (the hub's ``policy apply -f``
rules, ``kind: residency``) map data regions to the jurisdictions allowed to hold that data:
a model trained on it runs only there (checked at deploy planning, ``hub/policy.py``) and a
request carrying it goes only there (checked here, before any byte leaves the caller). The
sites' labels put finer regions in jurisdictions (``region=eu-west, jurisdiction=EU``:
:func:`region_jurisdictions`), so a policy for ``EU`` covers data from ``eu-west`` too. A
data region no policy covers stays at home: its jurisdiction by site labels, else the
jurisdiction of the same name (``EU`` -> ``{EU}``).

Where the policies come from: the hub's directory (``GET /api/v1/directory`` carries them;
:class:`~modelfleet.routing.directory.SiteDirectory` caches them on disk with the sites, so
they are enforced offline), or, for a static site list with no hub, the same rule documents
given by the caller (``policies=``). A caller's **local** rules (the SDK's ``residency=``,
the gateway's ``--residency FILE``, :class:`ResidencyRules`) are a stricter layer on top:
they can remove jurisdictions a policy permits, never add one. A local rule that names a
jurisdiction the policies do not permit is ignored, and every refusal (and a warning in the
log) says so.

A data region is hostile input (it arrives in a header from anyone who can reach a gateway),
so there is one grammar for it, :func:`check_data_region`: 1 to
:data:`MAX_DATA_REGION_LENGTH` characters of ``A-Z``, ``0-9`` and ``-`` (any case; it is
upper-cased), or ``*``. Everything else is refused with :class:`InvalidDataRegion` (400 at the
gateway) before any routing, by the SDK, the gateway, the rules' own keys and the hub's
policies alike.

Matching is case-insensitive. A site without a ``jurisdiction`` label receives only data
marked :data:`UNRESTRICTED` (``"*"``: public or synthetic data, no residency constraint).
Residency is never relaxed by the router: when no permitted site is available the request
fails with an error that quotes :meth:`Residency.describe`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.errors import InvalidDataRegion, InvalidInput
from modelfleet.yamlfile import load_yaml_file

__all__ = [
    "DATA_REGION_RULE",
    "MAX_DATA_REGION_LENGTH",
    "UNRESTRICTED",
    "FleetResidency",
    "PolicyRule",
    "Residency",
    "ResidencyRules",
    "check_data_region",
    "parse_policy_rules",
    "region_jurisdictions",
]

#: The data region of data that carries no residency constraint.
UNRESTRICTED = "*"
#: Longest data region accepted: room for ``EU-WEST-1``-style names, not for a payload.
MAX_DATA_REGION_LENGTH = 32
#: The grammar in words, quoted by every refusal.
DATA_REGION_RULE = (
    f"a data region is 1-{MAX_DATA_REGION_LENGTH} characters of A-Z, 0-9 and '-' (any case), "
    f"or {UNRESTRICTED!r} for data without residency constraints"
)
# ASCII only, checked before upper-casing: str.upper() maps some non-ASCII letters to ASCII
# ones ('\u0131' -> 'I', '\ufb00' -> 'FF'), which must not sneak through.
_DATA_REGION = re.compile(rf"[A-Za-z0-9-]{{1,{MAX_DATA_REGION_LENGTH}}}", re.ASCII)


def check_data_region(value: str, where: str = "data_region") -> str:
    """``value`` upper-cased, or :class:`InvalidDataRegion` naming ``where`` it came from
    (an argument, a header) and the rule. The whole string must match: no surrounding
    blanks, no trailing newline."""
    if value == UNRESTRICTED or _DATA_REGION.fullmatch(value):
        return value.upper()
    shown = repr(value[: MAX_DATA_REGION_LENGTH + 1])
    if len(value) > MAX_DATA_REGION_LENGTH + 1:
        shown += f"... ({len(value)} characters)"
    raise InvalidDataRegion(f"{where} {shown} refused: {DATA_REGION_RULE}")


def _names(values: Any, what: str) -> frozenset[str]:
    """A non-empty list of names, upper-cased: jurisdictions or label values."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what}: give a list of names, not {values!r}")
    names = frozenset(str(v).strip().upper() for v in values)
    if not names or "" in names:
        raise InvalidInput(f"{what}: give at least one non-empty name")
    return names


@dataclass(frozen=True)
class PolicyRule:
    """One of the fleet's residency policies, as routing applies it to requests: data from
    ``regions`` may go only to sites whose ``label`` is one of ``allowed``."""

    name: str
    regions: frozenset[str]
    allowed: frozenset[str]
    label: str = "jurisdiction"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PolicyRule:
        """A hub residency policy (as ``policy apply -f`` takes it, or as the directory
        carries it); ``training_regions`` is the older spelling of ``regions``."""
        if not isinstance(doc, Mapping):
            raise InvalidInput(f"a residency policy must be a mapping, got {doc!r}")
        name = str(doc.get("name") or "?")
        raw = doc.get("regions", doc.get("training_regions"))
        if raw is None:
            raise InvalidInput(f"residency policy {name!r} needs 'regions' (data regions)")
        if isinstance(raw, str) or not isinstance(raw, Iterable):
            raise InvalidInput(f"residency policy {name!r}: regions must be a list")
        regions = frozenset(check_data_region(str(r), f"residency policy {name!r}") for r in raw)
        if not regions:
            raise InvalidInput(f"residency policy {name!r} names no region")
        allowed = _names(
            doc.get("allowed_jurisdictions"), f"residency policy {name!r} allowed_jurisdictions"
        )
        return cls(name, regions, allowed, str(doc.get("label") or "jurisdiction"))

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "regions": sorted(self.regions),
            "allowed_jurisdictions": sorted(self.allowed),
            "label": self.label,
        }


def parse_policy_rules(docs: Iterable[Mapping[str, Any]]) -> tuple[PolicyRule, ...]:
    """The residency rules among policy documents (spread rules and others are skipped:
    they govern placements only)."""
    return tuple(
        PolicyRule.from_dict(doc)
        for doc in docs
        if isinstance(doc, Mapping) and doc.get("kind", "residency") == "residency"
    )


class ResidencyRules:
    """A caller's local rules, data region -> jurisdictions: a stricter layer only.

    ``ResidencyRules({"UK": ["UK"]})`` keeps UK data at UK sites even where a fleet policy
    would also permit EU sites. A local rule never widens what the fleet's policies permit:
    a jurisdiction it lists that they do not is ignored, and refusals say so.
    """

    def __init__(
        self, rules: Mapping[str, Iterable[str]] | None = None, *, source: str = "explicit"
    ) -> None:
        self._rules: dict[str, frozenset[str]] = {}
        for region, jurisdictions in (rules or {}).items():
            if isinstance(jurisdictions, str):
                raise InvalidInput(
                    f"residency rule for {region!r}: give a list of jurisdictions, "
                    f"not the string {jurisdictions!r}"
                )
            allowed = frozenset(j.strip().upper() for j in jurisdictions)
            if not allowed:
                raise InvalidInput(f"residency rule for {region!r} permits no jurisdiction")
            self._rules[check_data_region(str(region).strip(), "residency rule")] = allowed
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> ResidencyRules:
        """``{"default": "same", "rules": {REGION: [JURISDICTION, ...]}}`` from YAML or JSON."""
        file = Path(path)
        doc = load_yaml_file(file, "residency rules")
        default = doc.get("default", "same")
        if default != "same":
            raise InvalidInput(
                f"residency default {default!r} is not supported: only 'same' (data stays in "
                "its own jurisdiction unless a fleet policy says otherwise)"
            )
        rules = doc.get("rules", {})
        if not isinstance(rules, Mapping):
            raise InvalidInput("residency 'rules' must map a data region to a list")
        return cls(rules, source=str(file))

    def get(self, data_region: str) -> frozenset[str] | None:
        """The local rule's jurisdictions for an (upper-cased) region, None without one."""
        return self._rules.get(data_region)

    def regions(self) -> list[str]:
        """The data regions these rules name, sorted."""
        return sorted(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __repr__(self) -> str:
        return f"ResidencyRules({ {k: sorted(v) for k, v in sorted(self._rules.items())}!r})"


def region_jurisdictions(labels: Iterable[Mapping[str, str]]) -> dict[str, frozenset[str]]:
    """Which jurisdictions each ``region`` label value belongs to, by the sites' own labels:
    a site labelled ``region=eu-west, jurisdiction=EU`` puts eu-west in EU. Upper-cased. A
    region whose sites disagree maps to every jurisdiction they name (so every rule for any
    of them covers it, and it has no single home)."""
    found: dict[str, set[str]] = {}
    for site in labels:
        region, jurisdiction = site.get("region"), site.get("jurisdiction")
        # A label no data region could equal (``eu_west``) maps nothing: no request or
        # version can carry it, so leaving it out hides no rule.
        if region and jurisdiction and _DATA_REGION.fullmatch(region):
            found.setdefault(region.upper(), set()).add(jurisdiction.strip().upper())
    return {region: frozenset(names) for region, names in found.items()}


@dataclass(frozen=True)
class FleetResidency:
    """What the fleet says about residency: its policies, and the jurisdiction each finer
    region belongs to by the sites' labels (:func:`region_jurisdictions`)."""

    policies: tuple[PolicyRule, ...] = ()
    regions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, doc: Any) -> FleetResidency:
        """The directory's ``residency`` object: ``{"policies": [...], "regions": {...}}``
        (absent: no policies, from a hub that sends none)."""
        doc = doc or {}
        if not isinstance(doc, Mapping):
            raise InvalidInput("the directory's 'residency' must be an object")
        policies, regions = doc.get("policies") or [], doc.get("regions") or {}
        if not isinstance(policies, list) or not isinstance(regions, Mapping):
            raise InvalidInput("the directory's residency policies or regions are malformed")
        return cls(
            parse_policy_rules(policies),
            {
                str(k).upper(): _names(v, f"region {k!r}")
                for k, v in regions.items()
                if _DATA_REGION.fullmatch(str(k))
            },
        )


class Residency:
    """The rules a request is routed by: the fleet's policies, narrowed by local rules.

    For a data region ``R`` (``*``: any site): every policy naming ``R``, or the jurisdiction
    ``R`` belongs to by site labels, must permit the site (a site satisfies a policy when its
    ``label`` value is allowed; several policies all apply: the strictest wins). With no such
    policy, the site's jurisdiction must be ``R``'s home: the one jurisdiction the site labels
    put ``R`` in, else ``R`` itself. A local rule for ``R`` then also requires the site's
    jurisdiction to be one it lists.
    """

    def __init__(
        self, fleet: FleetResidency | None = None, local: ResidencyRules | None = None
    ) -> None:
        self.fleet = fleet or FleetResidency()
        self.local = local or ResidencyRules()

    def _covering(self, region: str) -> list[PolicyRule]:
        names = {region} | self.fleet.regions.get(region, frozenset())
        return [p for p in self.fleet.policies if p.regions & names]

    def _home(self, region: str) -> frozenset[str]:
        mapped = self.fleet.regions.get(region, frozenset())
        return mapped if len(mapped) == 1 else frozenset({region})

    def _base(self, region: str, covering: list[PolicyRule]) -> frozenset[str] | None:
        """The jurisdictions the fleet permits, or None when only policies on other labels
        apply (they do not limit the jurisdiction)."""
        jurisdictions = [p.allowed for p in covering if p.label == "jurisdiction"]
        if jurisdictions:
            return frozenset.intersection(*jurisdictions)
        return None if covering else self._home(region)

    def permits(self, data_region: str, labels: Mapping[str, str]) -> bool:
        region = data_region.strip().upper()
        if region == UNRESTRICTED:
            return True
        covering = self._covering(region)
        jurisdiction = labels.get("jurisdiction")
        mine = jurisdiction.strip().upper() if jurisdiction is not None else None
        if not covering and mine not in self._home(region):
            return False
        for rule in covering:
            value = labels.get(rule.label)
            if value is None or value.strip().upper() not in rule.allowed:
                return False
        narrowed = self.local.get(region)
        return narrowed is None or (mine is not None and mine in narrowed)

    def ignored(self) -> dict[str, list[str]]:
        """Per region, the jurisdictions a local rule lists that the policies do not permit
        (and that are therefore ignored): what an operator should hear about at start-up."""
        found = {}
        for region in self.local.regions():
            base = self._base(region, self._covering(region))
            narrowed = self.local.get(region) or frozenset()
            if base is not None and (extra := sorted(narrowed - base)):
                found[region] = extra
        return found

    def describe(self, data_region: str) -> str:
        """The rule in words, for error messages: which rule applied and where it came from."""
        region = data_region.strip().upper()
        if region == UNRESTRICTED:
            return "data region '*' is unrestricted (any site)"
        covering = self._covering(region)
        base = self._base(region, covering)
        narrowed = self.local.get(region)
        text = f"residency rule {region}"
        if base is not None:
            allowed = base if narrowed is None else base & narrowed
            text += f" -> {{{', '.join(sorted(allowed))}}}"
            named = [p for p in covering if p.label == "jurisdiction"]
            if named:
                text += f" (fleet policy {', '.join(repr(p.name) for p in named)})"
            elif self._home(region) != {region}:
                text += f" (default: its jurisdiction by site labels, region={region.lower()})"
            else:
                text += " (default: same jurisdiction only)"
        for rule in covering:
            if rule.label != "jurisdiction":
                text += (
                    f"; {rule.label} in {{{', '.join(sorted(rule.allowed))}}} "
                    f"(fleet policy {rule.name!r})"
                )
        if narrowed is not None:
            text += (
                f"; narrowed by the local rule {region} -> {{{', '.join(sorted(narrowed))}}} "
                f"(from {self.local.source})"
            )
            widened = sorted(narrowed - base) if base is not None else []
            if widened:
                text += (
                    f"; {', '.join(widened)} ignored: local rules can only narrow the "
                    "fleet's policies, never add a jurisdiction"
                )
        return text

    def __repr__(self) -> str:
        names = [p.name for p in self.fleet.policies]
        return f"Residency(policies={names!r}, local={self.local!r})"
