"""A small PromQL reader for the dashboard test: which metric names and label names an
expression uses, from tokens rather than a regular expression over the text, so that a label
inside ``{...}`` or ``by (...)``, a function name, a keyword or a duration is never taken for
a metric, and an expression it cannot read is an error rather than a silent pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Expression", "PromQLError", "Selector", "references", "variable_references"]


def _words(*lines: str) -> frozenset[str]:
    return frozenset(word for line in lines for word in line.split())


AGGREGATIONS = _words(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile",
    "limitk limit_ratio",
)
FUNCTIONS = _words(
    "abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month",
    "day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg",
    "histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar",
    "histogram_sum holt_winters hour idelta increase irate label_join label_replace ln log2",
    "log10 minute month predict_linear rate resets round scalar sgn sort sort_desc",
    "sort_by_label sort_by_label_desc sqrt time timestamp vector year avg_over_time",
    "min_over_time max_over_time sum_over_time count_over_time quantile_over_time",
    "stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time",
    "acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi",
)
#: Keywords that are neither metrics nor functions.
KEYWORDS = _words("and or unless bool offset inf nan atan2")
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    |(?P<range>\[[^\[\]]*\])
    |(?P<number>0x[0-9a-f]+|(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?)+)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE | re.IGNORECASE,
)


class PromQLError(ValueError):
    """An expression the checker cannot read: a dashboard must not hide names from it."""


@dataclass
class Selector:
    """One vector selector: a metric name and the label names its ``{...}`` matches on."""

    metric: str
    labels: set[str]
    position: int


@dataclass
class Expression:
    """What an expression references: its selectors, and labels that some of them must have
    (``by``/``without`` labels on the aggregated selectors, ``on``/``ignoring`` labels on
    all of them)."""

    selectors: list[Selector] = field(default_factory=list)
    #: (label names, first token, last token): every selector inside needs each label.
    needs: list[tuple[set[str], int, int]] = field(default_factory=list)


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each token, spaces dropped; anything unknown is an error."""
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None:
            raise PromQLError(f"cannot read {expr[at : at + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
        at = match.end()
    return tokens


def _closing(tokens: list[tuple[str, str]]) -> dict[int, int]:
    """Index of each opening ``(`` or ``{`` -> index of the token that closes it."""
    pairs: dict[int, int] = {}
    stack: list[tuple[int, str]] = []
    for i, (kind, text) in enumerate(tokens):
        if kind == "op" and text in ("(", "{"):
            stack.append((i, text))
        elif kind == "op" and text in (")", "}"):
            if not stack or {"(": ")", "{": "}"}[stack[-1][1]] != text:
                raise PromQLError(f"unbalanced {text!r}")
            pairs[stack.pop()[0]] = i
    if stack:
        raise PromQLError("unclosed bracket")
    return pairs


def _names(tokens: list[tuple[str, str]], start: int, end: int) -> set[str]:
    """The identifiers of a ``(a, b)`` label list between two bracket indices."""
    inner = tokens[start + 1 : end]
    names = {text for kind, text in inner if kind == "ident"}
    if any(kind != "ident" and text != "," for kind, text in inner):
        raise PromQLError(f"not a label list: {' '.join(t for _, t in inner)}")
    return names


def references(expr: str) -> Expression:
    """The metric names and label names ``expr`` uses (see the module's docstring)."""
    tokens = tokenize(expr)
    pairs = _closing(tokens)
    out = Expression()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        after = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "op" and text == "{":
            raise PromQLError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        word = text.lower()
        if word in GROUPING or word in MATCHING:
            if after != ("op", "("):
                if word in ("group_left", "group_right"):
                    i += 1
                    continue
                raise PromQLError(f"{text} without a label list in {expr!r}")
            close = pairs[i + 1]
            labels = _names(tokens, i + 1, close)
            if word in MATCHING:
                out.needs.append((labels, 0, len(tokens)))
            elif close + 1 < len(tokens) and tokens[close + 1] == ("op", "("):
                out.needs.append((labels, close + 1, pairs[close + 1]))  # sum by (l) (x)
            elif i > 0 and tokens[i - 1] == ("op", ")"):
                opening = next(k for k, v in pairs.items() if v == i - 1)
                out.needs.append((labels, opening, i - 1))  # sum (x) by (l)
            else:
                raise PromQLError(f"{text} ({', '.join(sorted(labels))}) aggregates nothing")
            i = close + 1
        elif word in KEYWORDS:
            i += 1
        elif text in AGGREGATIONS and after[0] == "ident" and after[1].lower() in GROUPING:
            i += 1  # sum by (l) (x): the grouping is read next
        elif after == ("op", "("):
            if text not in FUNCTIONS and text not in AGGREGATIONS:
                raise PromQLError(f"{text}() is not a PromQL function")
            i += 1
        elif after == ("op", "{"):
            close = pairs[i + 1]
            labels = _matchers(tokens[i + 2 : close], expr)
            out.selectors.append(Selector(text, labels, i))
            i = close + 1
        else:
            out.selectors.append(Selector(text, set(), i))
            i += 1
    return out


def _matchers(inner: list[tuple[str, str]], expr: str) -> set[str]:
    """Label names of ``label op "value", ...`` (a trailing comma is allowed)."""
    labels = set()
    for at in range(0, len(inner), 4):
        group = inner[at : at + 4]
        if len(group) < 3:
            raise PromQLError(f"incomplete matcher in {expr!r}")
        (k1, label), (k2, op), (k3, _value) = group[:3]
        if k1 != "ident" or k2 != "op" or op not in ("=", "!=", "=~", "!~") or k3 != "string":
            raise PromQLError(f"not a label matcher: {label} {op} {_value} in {expr!r}")
        if len(group) == 4 and group[3] != ("op", ","):
            raise PromQLError(f"matchers must be separated by commas in {expr!r}")
        labels.add(label)
    return labels


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.+),\s*(?P<label>\w+)\s*\)\s*$", re.S)


def variable_references(query: str) -> Expression:
    """A template variable's query: ``label_values(selector, label)`` or
    ``query_result(expr)``; the label must be on the selector's series."""
    if match := _LABEL_VALUES.match(query):
        found = references(match["expr"])
        found.needs.append(({match["label"]}, 0, 1 << 30))
        return found
    if match := re.match(r"^\s*query_result\((?P<expr>.+)\)\s*$", query, re.S):
        return references(match["expr"])
    raise PromQLError(f"variable query {query!r}: use label_values(selector, label)")
