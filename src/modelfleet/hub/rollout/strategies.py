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

``approval`` makes a rollout wait for an operator before one wave: ``{wave: N}`` (1 = before
any site moves), ``{wave: canary}`` (a canary strategy: before the canary), ``{wave: VALUE}``
(a ``waves`` strategy: before the wave of that label value) or ``required`` (before the wave
after the first). A wave number past the rollout's waves is refused when it is planned.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

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


#: Waves a rollout may pause before; far more than any strategy builds.
MAX_APPROVAL_WAVE = 1000


class Approval(BaseModel):
    """Before which wave a rollout waits for ``rollout approve``."""

    model_config = ConfigDict(extra="forbid")

    wave: int | str = Field(
        description="A wave number (1 = before any site moves), `canary` (before the canary "
        "of a canary strategy) or a label value of a `waves` strategy's order."
    )

    @field_validator("wave")
    @classmethod
    def _wave(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not 1 <= value <= MAX_APPROVAL_WAVE:
            raise ValueError(f"approval wave must be 1-{MAX_APPROVAL_WAVE}, got {value}")
        if isinstance(value, str) and not 1 <= len(value.strip()) <= 64:
            raise ValueError("approval wave must be a number, `canary` or a label value")
        return value.strip() if isinstance(value, str) else value


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
    approval: Approval | None = Field(
        default=None,
        description="Wait for an operator's `rollout approve` before a wave: "
        "`required` (before wave 2) or {wave: N | canary | LABEL-VALUE}.",
    )

    @field_validator("approval", mode="before")
    @classmethod
    def _approval(cls, value: Any) -> Any:
        if value == "required":
            return {"wave": 2}
        if isinstance(value, str | int) and not isinstance(value, bool):
            raise ValueError("approval is `required` or {wave: N | canary | LABEL-VALUE}")
        return value

    @model_serializer(mode="wrap")
    def _without_empty_approval(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A strategy without approval is stored exactly as before approvals existed, so a
        # deployment's stored strategy and a fleet file's compare equal.
        data: dict[str, Any] = handler(self)
        if data.get("approval") is None:
            data.pop("approval", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Strategy:
        if self.progress_deadline_s < self.bake_s:
            raise ValueError("progress_deadline_s must be at least bake_s")
        if self.approval is not None and isinstance(self.approval.wave, str):
            wave = self.approval.wave
            if wave == "canary" and self.kind != "canary":
                raise ValueError("approval wave `canary` needs a canary strategy")
            if wave != "canary" and (self.kind != "waves" or wave not in self.order):
                raise ValueError(
                    f"approval wave {wave!r} is neither a number, `canary`, nor a value of "
                    "the waves strategy's order"
                )
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


def approval_wave(strategy: Strategy) -> int | None:
    """The wave (from 1) a rollout waits for approval before, or None."""
    if strategy.approval is None:
        return None
    wave = strategy.approval.wave
    if isinstance(wave, int):
        return wave
    if wave == "canary":
        return 1
    return strategy.order.index(wave) + 1


def check_approval(strategy: Strategy, waves: int) -> str | None:
    """Why the approval cannot apply to a rollout of ``waves`` waves, or None."""
    wave = approval_wave(strategy)
    if wave is None or wave <= waves:
        return None
    return (
        f"approval before wave {wave} is out of range: this rollout has {waves} wave(s); "
        "use a wave from 1 (before any site moves) to "
        f"{waves}"
    )


def describe_strategy(strategy: Strategy) -> str:
    """The strategy in words, e.g. ``canary site-a then 50%,100% of the rest``."""
    text = _kind_text(strategy)
    wave = approval_wave(strategy)
    return text if wave is None else f"{text}; approval before wave {wave}"


def _kind_text(strategy: Strategy) -> str:
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
