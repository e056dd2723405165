"""Health gates of a rollout step, and the protocol that feeds them figures.

A step is judged on the new version's monitoring data at the step's sites since the step
started: error rate, p99 latency (absolute, or relative to the previous version at the same
sites), a minimum request count below which nothing is concluded, and optionally drift and
the count of open anomalies (``max_anomalies``, from ``hub/anomalies.py``).

The relative gate compares like with like: the baseline is the previous version at the same
sites over the latest windows before the step started that span at least as long as the new
version has been observed and hold at least ``min_requests`` requests (looking back no further
than the hub's ``rollout_baseline_window_s``). It waits while either side has too few
requests, and a p99 within ``p99_noise_ms`` of the baseline never fails it, so a busy CPU's
jitter on a sub-millisecond model is not read as a regression.

Verdicts: ``pass`` (enough traffic, every gate holds), ``fail`` (enough traffic and a gate
is broken — decided at once, without waiting for the bake time to end) and ``wait`` (too
little traffic so far). The controller turns a ``wait`` that outlives the progress deadline
into *inconclusive*.

Figures come from a :class:`GateSource`. The production source adapts the hub's telemetry
service (``hub/telemetry.py``, see :mod:`modelfleet.hub.rollout.sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import InvalidInput
from modelfleet.hub.policy import describe


class Gates(BaseModel):
    """Limits a step must stay within; an unset limit is not checked."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    max_p99_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="p99 at most this times the previous version's p99 at the same sites, "
        "read over a comparable window just before the step started.",
    )
    p99_noise_ms: float = Field(
        default=10.0,
        ge=0,
        le=3_600_000,
        description="The relative gate fails only when the p99 also exceeds the baseline by "
        "more than this: differences of a few ms are scheduling noise, not a regression.",
    )
    min_requests: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Requests the new version must have served at the step's sites before "
        "any verdict; the relative gate needs as many for the previous version too.",
    )
    max_drift: float | None = Field(default=None, ge=0, le=1_000_000)
    max_anomalies: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Open anomalies (hub/anomalies.py) of the new version at the step's sites "
        "at most this many; 0 fails the step on the first one.",
    )
    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Accuracy from the sites' labels (docs/feedback.md) of the new version at "
        "the step's sites at least this (classifiers).",
    )
    min_accuracy_vs_previous: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The new version's accuracy may be at most this much below the previous "
        "version's at the same sites (labels of the last 7 days), e.g. 0.02.",
    )
    max_mae: float | None = Field(
        default=None,
        ge=0,
        le=1e12,
        description="Mean absolute error from the sites' labels at most this (regressors).",
    )
    min_labels: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Labels joined with the new version's predictions at the step's sites "
        "before an accuracy gate is judged (at least 1 when one is set); the relative gate "
        "needs as many for the previous version too.",
    )


def parse_gates(raw: dict[str, Any] | None) -> Gates:
    try:
        return Gates.model_validate(raw or {})
    except ValidationError as exc:
        raise InvalidInput(f"invalid gates: {describe(exc)}") from exc


@dataclass(frozen=True)
class Figures:
    """What monitoring saw of one version at some sites over a time range."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    drift: float | None = None  # the largest drift statistic over features, if known
    anomalies: int | None = None  # open anomalies of the version at the sites, if asked
    #: From the sites' labels (hub/accuracy.py), when an accuracy gate asked for them:
    accuracy: float | None = None  # accuracy, or MAE when ``accuracy_metric`` is "mae"
    accuracy_metric: str | None = None  # "accuracy" | "mae"
    labels: int | None = None  # labels behind ``accuracy``
    previous_accuracy: float | None = None  # the previous version's at the same sites
    previous_labels: int | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 6)}


class GateSource(Protocol):
    """Where gate figures come from (the telemetry service in production)."""

    def figures(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        *,
        drift: bool = False,
        anomalies: bool = False,
        accuracy: bool = False,
        previous: int | None = None,
    ) -> Figures:
        """Merged figures of ``model:version`` at ``sites`` in ``[since, until)``; the
        drift statistic only when ``drift`` is asked for (it costs sketch merges), the
        count of open anomalies only when ``anomalies`` is, the accuracy from labels only
        when ``accuracy`` is (with the ``previous`` version's at the same sites, if given).
        The controller passes ``accuracy``/``previous`` only when an accuracy gate is set,
        so a source without accuracy need not take them."""
        ...

    def baseline(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        before: datetime,
        *,
        span_s: float,
        min_requests: int,
        lookback_s: float,
    ) -> Figures:
        """The figures of ``model:version`` at ``sites`` over the latest windows that began
        before ``before``: enough of them to span ``span_s`` seconds and hold
        ``min_requests`` requests, none older than ``lookback_s`` before ``before``."""
        ...


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["pass", "fail", "wait"]
    gate: str | None
    message: str
    figures: Figures
    baseline: Figures | None = None  # the previous version's, for the relative p99 gate

    @property
    def baseline_p99_ms(self) -> float | None:
        return self.baseline.p99_ms if self.baseline is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "gate": self.gate,
            "message": self.message,
            "figures": self.figures.as_dict(),
            "baseline": self.baseline.as_dict() if self.baseline is not None else None,
            "baseline_p99_ms": self.baseline_p99_ms,
        }


def evaluate(gates: Gates, figures: Figures, baseline: Figures | None) -> Verdict:
    """Judge ``figures`` against ``gates``; ``baseline`` (the previous version's figures at
    the same sites) feeds the relative p99 gate, which waits until the baseline holds
    ``min_requests`` requests too: a ratio against a handful of requests is a coin toss."""

    def verdict(outcome: Literal["pass", "fail", "wait"], gate: str | None, msg: str) -> Verdict:
        return Verdict(outcome, gate, msg, figures, baseline)

    needed = needed_requests(gates)
    if figures.requests < needed:
        return verdict(
            "wait", "min_requests", f"{figures.requests} request(s) so far, {needed} needed"
        )
    if gates.max_error_rate is not None and figures.error_rate > gates.max_error_rate:
        return verdict(
            "fail",
            "max_error_rate",
            f"error rate {figures.error_rate:.2%} ({figures.errors}/{figures.requests}) "
            f"> {gates.max_error_rate:.2%}",
        )
    p99, limit_ms = figures.p99_ms, gates.max_p99_ms
    if limit_ms is not None and p99 is not None and p99 > limit_ms:
        return verdict("fail", "max_p99_ms", f"p99 {p99:.1f} ms > {limit_ms:g} ms")
    ratio = gates.max_p99_ratio
    if ratio is not None and baseline is not None:
        if baseline.requests < needed:
            return verdict(
                "wait",
                "max_p99_ratio",
                f"baseline: the previous version served {baseline.requests} request(s) at "
                f"these sites before the step, {needed} needed to compare p99",
            )
        base = baseline.p99_ms
        if p99 is not None and base is not None:
            limit = max(ratio * base, base + gates.p99_noise_ms)
            if p99 > limit:
                return verdict(
                    "fail",
                    "max_p99_ratio",
                    f"p99 {p99:.1f} ms vs the previous version's {base:.1f} ms at the same "
                    f"sites: {p99 / base if base else float('inf'):.1f}x > {ratio:g}x "
                    f"({figures.requests} vs {baseline.requests} requests)",
                )
    drift, max_drift = figures.drift, gates.max_drift
    if max_drift is not None and drift is not None and drift > max_drift:
        return verdict("fail", "max_drift", f"drift {drift:.3f} > {max_drift:g}")
    found, max_found = figures.anomalies, gates.max_anomalies
    if max_found is not None and found is not None and found > max_found:
        return verdict(
            "fail",
            "max_anomalies",
            f"{found} open anomal{'y' if found == 1 else 'ies'} of the new version at these "
            f"sites > {max_found} (modelfleet anomalies --open)",
        )
    if accuracy_gated(gates):
        held = _judge_accuracy(gates, figures)
        if held is not None:
            return verdict(*held)
    return verdict("pass", None, _passed(gates, figures, baseline))


def accuracy_gated(gates: Gates) -> bool:
    """True when a gate reads the sites' labels (the source is asked for accuracy)."""
    return any(
        v is not None for v in (gates.min_accuracy, gates.min_accuracy_vs_previous, gates.max_mae)
    )


def _judge_accuracy(gates: Gates, f: Figures) -> tuple[Literal["fail", "wait"], str, str] | None:
    """The accuracy gates' verdict, None when they hold. Too few labels waits (labels come
    after the fact); a gate that does not fit the model's kind waits with the reason."""
    needed = max(gates.min_labels, 1)
    labels = f.labels or 0
    if labels < needed:
        return "wait", "min_labels", f"{labels} label(s) of the new version so far, {needed} needed"
    value = f.accuracy if f.accuracy is not None else 0.0
    if f.accuracy_metric == "mae":
        if gates.max_mae is not None and value > gates.max_mae:
            return "fail", "max_mae", f"MAE {value:.4g} > {gates.max_mae:g} ({labels} labels)"
        if gates.min_accuracy is not None or gates.min_accuracy_vs_previous is not None:
            return "wait", "min_accuracy", "the labels are a regressor's (MAE): use max_mae"
        return None
    if gates.max_mae is not None:
        return "wait", "max_mae", "the labels are a classifier's (accuracy): use min_accuracy"
    if gates.min_accuracy is not None and value < gates.min_accuracy:
        return (
            "fail",
            "min_accuracy",
            f"accuracy {value:.2%} < {gates.min_accuracy:.2%} ({labels} labels)",
        )
    drop = gates.min_accuracy_vs_previous
    if drop is not None:
        previous, before = f.previous_accuracy, f.previous_labels or 0
        if previous is None or before < needed:
            return (
                "wait",
                "min_accuracy_vs_previous",
                f"the previous version has {before} label(s) at these sites, {needed} needed",
            )
        if previous - value > drop:
            return (
                "fail",
                "min_accuracy_vs_previous",
                f"accuracy {value:.2%} vs the previous version's {previous:.2%} at the same "
                f"sites: down {previous - value:.2%} > {drop:.2%} ({labels} vs {before} labels)",
            )
    return None


def _passed(gates: Gates, figures: Figures, baseline: Figures | None) -> str:
    """'all gates hold', with the relative gate's two figures when it was judged."""
    base = baseline.p99_ms if baseline is not None else None
    if gates.max_p99_ratio is None or base is None or figures.p99_ms is None:
        return "all gates hold"
    return (
        f"all gates hold (p99 {figures.p99_ms:.1f} ms vs the previous version's {base:.1f} ms: "
        f"{figures.p99_ms / base if base else float('inf'):.1f}x <= {gates.max_p99_ratio:g}x)"
    )


def needed_requests(gates: Gates) -> int:
    """Requests a step needs before any verdict: ``min_requests``, and at least one when a
    gate on rates or latency is set (such a gate means nothing without traffic)."""
    traffic = any(
        v is not None
        for v in (gates.max_error_rate, gates.max_p99_ms, gates.max_p99_ratio, gates.max_drift)
    )
    return max(gates.min_requests, 1 if traffic else 0)
