"""Residency rules: which site jurisdictions may receive data from which data region.

A request's ``data_region`` says where its data comes from (``EU``, ``US``, ``IN``, ...); a
site's ``jurisdiction`` label says under whose law it runs. The default rule is the strictest
one that is still useful: data may only go to a site of the same jurisdiction. Exceptions are
explicit, one line per data region::

    rules = ResidencyRules({"UK": ["UK", "EU"], "CH": ["CH", "EU"]})

A data region is hostile input (it arrives in a header from anyone who can reach a gateway),
so there is one grammar for it, :func:`check_data_region`: 1 to
:data:`MAX_DATA_REGION_LENGTH` characters of ``A-Z``, ``0-9`` and ``-`` (any case; it is
upper-cased), or ``*``. Everything else is refused with :class:`InvalidDataRegion` (400 at the
gateway) before any routing, by the SDK, the gateway and the rules' own keys alike.

Matching is case-insensitive. A site without a ``jurisdiction`` label receives only data
marked :data:`UNRESTRICTED` (``"*"``: public or synthetic data, no residency constraint).
Residency is never relaxed by the router: when no permitted site is available the request
fails with an error that quotes :meth:`ResidencyRules.describe`.

Where the rules come from today: the SDK's ``residency=`` argument (a mapping as above) and the
gateway's ``--residency FILE`` (:meth:`ResidencyRules.from_file`: YAML or JSON
``{"default": "same", "rules": {"UK": ["UK", "EU"]}}``). The hub's residency *policies* are a
different thing, checked when a deployment is planned (``hub/policy.py``); routing does not
read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from modelfleet.errors import InvalidDataRegion, InvalidInput
from modelfleet.yamlfile import load_yaml_file

__all__ = [
    "DATA_REGION_RULE",
    "MAX_DATA_REGION_LENGTH",
    "UNRESTRICTED",
    "ResidencyRules",
    "check_data_region",
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


class ResidencyRules:
    """Data region -> the jurisdictions that may receive it (default: the same one)."""

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
                "its own jurisdiction unless a rule says otherwise)"
            )
        rules = doc.get("rules", {})
        if not isinstance(rules, Mapping):
            raise InvalidInput("residency 'rules' must map a data region to a list")
        return cls(rules, source=str(file))

    def allowed(self, data_region: str) -> frozenset[str] | None:
        """Permitted jurisdictions, or None for unrestricted data (any site)."""
        region = data_region.strip().upper()
        if region == UNRESTRICTED:
            return None
        return self._rules.get(region, frozenset({region}))

    def permits(self, data_region: str, jurisdiction: str | None) -> bool:
        allowed = self.allowed(data_region)
        if allowed is None:
            return True
        return jurisdiction is not None and jurisdiction.strip().upper() in allowed

    def describe(self, data_region: str) -> str:
        """The rule in words, for error messages: which rule applied and where it came from."""
        region = data_region.strip().upper()
        allowed = self.allowed(region)
        if allowed is None:
            return "data region '*' is unrestricted (any site)"
        names = ", ".join(sorted(allowed))
        if region in self._rules:
            return f"residency rule {region} -> {{{names}}} (from {self.source})"
        return f"residency rule {region} -> {{{names}}} (default: same jurisdiction only)"

    def __repr__(self) -> str:
        return f"ResidencyRules({ {k: sorted(v) for k, v in sorted(self._rules.items())}!r})"
