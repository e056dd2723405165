"""How a rollout splits its sites into waves.

* ``all-at-once`` — one wave.
* ``canary`` — first the canary (a site name, a selector, or the first site by name), then
  the rest, in one wave or in cumulative percentages of the rest (``then: [50, 100]``).
* ``waves`` — by label order, e.g. ``label: region, order: [eu-west, us-east, ap-south]``.
* ``percent`` — cumulative percentages of the sites, e.g. ``[10, 50, 100]``.
* ``exponential`` — ``start`` sites, then multiplied by ``factor`` until all are moved.

Sites are taken in name order inside a strategy so a plan is reproducible: the same fleet
and the same strategy give the same waves in ``--plan`` and in the real rollout. A plan is
refused when a step would move no new site, which catches "10 % of 3 sites" early.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfleet.errors import InvalidInput
from modelfleet.hub.policy import describe
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.store.records import SiteRecord

Kind = Literal["all-at-once", "canary", "waves", "percent", "exponential"]


def _check_percentages(values: list[float], what: str) -> None:
    previous = 0.0
    for value in values:
        if not 0 < value <= 100:
            raise ValueError(f"{what}: each percentage must be in (0, 100], got {value:g}")
        if value <= previous:
            raise ValueError(f"{what}: percentages must increase, got {values}")
        previous = value
    if values and values[-1] != 100:
        raise ValueError(f"{what}: the last percentage must be 100 so every site is reached")


class Strategy(BaseModel):
    """A rollout strategy with its timing; ``extra`` keys are refused, typos included."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = "all-at-once"
    canary: str | None = Field(
        default=None, description="canary: a site name or a selector (default: first site)."
    )
    then: list[float] = Field(
        default_factory=lambda: [100.0],
        description="canary: cumulative percentages of the remaining sites.",
    )
    label: str | None = Field(default=None, description="waves: the label to order by.")
    order: list[str] = Field(default_factory=list, description="waves: label values in order.")
    percentages: list[float] = Field(default_factory=list, description="percent: cumulative.")
    start: int = Field(default=1, ge=1, description="exponential: sites in the first step.")
    factor: float = Field(default=2.0, gt=1, description="exponential: growth per step.")
    bake_s: float = Field(default=60.0, ge=0, description="Observation time per step.")
    progress_deadline_s: float = Field(
        default=600.0, gt=0, description="Without a verdict by then a step is inconclusive."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Strategy:
        if self.progress_deadline_s < self.bake_s:
            raise ValueError("progress_deadline_s must be at least bake_s")
        if self.kind == "canary":
            _check_percentages(self.then, "then")
        if self.kind == "waves":
            if not self.label or not self.order:
                raise ValueError("waves needs `label` and a non-empty `order`")
            if len(set(self.order)) != len(self.order):
                raise ValueError(f"waves: order repeats a value: {self.order}")
        if self.kind == "percent":
            if not self.percentages:
                raise ValueError("percent needs `percentages`, e.g. [10, 50, 100]")
            _check_percentages(self.percentages, "percentages")
        return self


def parse_strategy(raw: dict[str, Any] | None) -> Strategy:
    try:
        return Strategy.model_validate(raw or {})
    except ValidationError as exc:
        raise InvalidInput(f"invalid strategy: {describe(exc)}") from exc


def _cumulative_counts(total: int, percentages: list[float]) -> list[int]:
    return [min(total, math.ceil(total * p / 100 - 1e-9)) for p in percentages]


def _split(sites: list[SiteRecord], counts: list[int], what: list[str]) -> list[list[str]]:
    waves: list[list[str]] = []
    done = 0
    for count, label in zip(counts, what, strict=True):
        if count <= done:
            raise InvalidInput(
                f"step {len(waves) + 1} ({label}) selects no new site among {len(sites)} "
                "site(s); use fewer steps or larger ones"
            )
        waves.append([s.name for s in sites[done:count]])
        done = count
    return waves


def build_waves(strategy: Strategy, sites: list[SiteRecord]) -> list[list[str]]:
    """Split ``sites`` into waves; ``InvalidInput`` when a step would select no site."""
    ordered = sorted(sites, key=lambda s: s.name)
    if not ordered:
        raise InvalidInput("the rollout has no site to move (no online site is selected)")
    if strategy.kind == "all-at-once":
        return [[s.name for s in ordered]]
    if strategy.kind == "canary":
        return _canary(strategy, ordered)
    if strategy.kind == "waves":
        return _by_label(strategy, ordered)
    if strategy.kind == "percent":
        counts = _cumulative_counts(len(ordered), strategy.percentages)
        return _split(ordered, counts, [f"{p:g}%" for p in strategy.percentages])
    counts, labels, size = [], [], float(strategy.start)
    while not counts or counts[-1] < len(ordered):
        counts.append(min(len(ordered), max(math.ceil(size), (counts[-1] + 1) if counts else 1)))
        labels.append(f"{counts[-1]} sites")
        size *= strategy.factor
    return _split(ordered, counts, labels)


def _canary(strategy: Strategy, ordered: list[SiteRecord]) -> list[list[str]]:
    names = {s.name for s in ordered}
    if strategy.canary is None:
        first = [ordered[0]]
    elif strategy.canary in names:
        first = [s for s in ordered if s.name == strategy.canary]
    else:
        selector = parse_selector(strategy.canary)
        first = [s for s in ordered if selector.matches(s.labels)]
        if not first:
            raise InvalidInput(
                f"canary {strategy.canary!r} is neither a selected online site nor a selector "
                "matching one"
            )
    chosen = {s.name for s in first}
    rest = [s for s in ordered if s.name not in chosen]
    waves = [[s.name for s in first]]
    if rest:
        counts = _cumulative_counts(len(rest), strategy.then)
        waves += _split(rest, counts, [f"{p:g}% of the rest" for p in strategy.then])
    return waves


def _by_label(strategy: Strategy, ordered: list[SiteRecord]) -> list[list[str]]:
    label = strategy.label or ""
    stray = [s for s in ordered if s.labels.get(label) not in strategy.order]
    if stray:
        listed = ", ".join(f"{s.name} ({label}={s.labels.get(label)})" for s in stray)
        raise InvalidInput(
            f"sites whose {label} is not in the wave order {strategy.order}: {listed}; "
            "add the value to the order or narrow the selector"
        )
    waves = []
    for value in strategy.order:
        wave = [s.name for s in ordered if s.labels.get(label) == value]
        if not wave:
            raise InvalidInput(f"wave {label}={value} selects no online site")
        waves.append(wave)
    return waves


def describe_strategy(strategy: Strategy) -> str:
    if strategy.kind == "canary":
        rest = ",".join(f"{p:g}%" for p in strategy.then)
        return f"canary {strategy.canary or '(first site)'} then {rest} of the rest"
    if strategy.kind == "waves":
        return f"waves by {strategy.label}: {', '.join(strategy.order)}"
    if strategy.kind == "percent":
        return "percent " + ",".join(f"{p:g}%" for p in strategy.percentages)
    if strategy.kind == "exponential":
        return f"exponential start {strategy.start} x{strategy.factor:g}"
    return "all-at-once"
