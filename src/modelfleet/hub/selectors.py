"""Label selectors: ``region=eu-west,tier=edge``, ``jurisdiction in (EU,UK)``, ``provider!=aws``.

A selector is a comma-separated conjunction of terms (commas inside parentheses belong to a
set). Terms: ``k=v`` (also ``k==v``), ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``
(label present) and ``!k`` (label absent) — the forms Kubernetes users already know. The
empty selector matches every site.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelfleet.errors import InvalidInput

if TYPE_CHECKING:
    from modelfleet.hub.store.records import SiteRecord

_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_VALUE = r"[A-Za-z0-9._-]*"
_TERM = re.compile(
    rf"""^\s*(?:
        (?P<nkey>!\s*{_KEY})
      | (?P<skey>{_KEY})\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
      | (?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})
      | (?P<ekey>{_KEY})
    )\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Term:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "=":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "in":
            return value in self.values
        if self.op == "notin":
            return value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None

    def __str__(self) -> str:
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return self.key if self.op == "exists" else f"!{self.key}"


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(term.matches(labels) for term in self.terms)

    def explain(self, labels: dict[str, str]) -> str | None:
        """The first term a site fails, as text; None when it matches."""
        for term in self.terms:
            if not term.matches(labels):
                have = labels.get(term.key)
                return f"{term} (site has {term.key}={have})" if have else f"{term} (no {term.key})"
        return None

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms) or "(all sites)"


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidInput(f"invalid selector {text!r}: unbalanced ')'")
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise InvalidInput(f"invalid selector {text!r}: unbalanced '('")
    terms.append("".join(current))
    return terms


def parse_selector(text: str) -> Selector:
    """Parse a selector; ``InvalidInput`` names the term that does not parse."""
    if not text.strip():
        return Selector()
    terms = []
    for raw in _split_terms(text):
        match = _TERM.match(raw)
        if match is None:
            raise InvalidInput(
                f"invalid selector term {raw.strip()!r}: expected k=v, k!=v, "
                "k in (a,b), k notin (a,b), k or !k"
            )
        if match["nkey"]:
            terms.append(Term(match["nkey"].lstrip("!").strip(), "!exists"))
        elif match["skey"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            if not values:
                raise InvalidInput(f"invalid selector term {raw.strip()!r}: empty set")
            terms.append(Term(match["skey"], match["setop"], values))
        elif match["key"]:
            op = "=" if match["op"] in ("=", "==") else "!="
            terms.append(Term(match["key"], op, (match["value"],)))
        else:
            terms.append(Term(match["ekey"], "exists"))
    return Selector(tuple(terms))


def no_site_selected(selector: Selector, sites: Sequence[SiteRecord]) -> str:
    """Why a selector leaves a deployment without sites, with the labels that do exist: a
    typo in a label (``regoin=eu-west``) or a value (``region=eu-wset``) shows at once."""
    text = str(selector)
    if not sites:
        return f"selector {text!r} selects no site: the hub has no site yet (`site add`)"
    matching = [s for s in sites if selector.matches(s.labels)]
    if matching:
        return (
            f"selector {text!r} selects no site in service: every site it matches is "
            "excluded (see the plan's excluded sites)"
        )
    values: dict[str, set[str]] = {}
    for site in sites:
        for key, value in site.labels.items():
            values.setdefault(key, set()).add(value)
    labels = "; ".join(f"{k}={_few(sorted(v))}" for k, v in sorted(values.items()))
    return f"selector {text!r} selects no site; labels in use: {labels or '(none)'}"


def _few(values: list[str], most: int = 6) -> str:
    shown = "|".join(values[:most])
    return shown + (f"|... ({len(values) - most} more)" if len(values) > most else "")
