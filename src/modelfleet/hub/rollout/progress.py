"""How far the current wave of a rollout is, gate by gate: what ``rollout status`` shows.

The controller judges a wave with :func:`~modelfleet.hub.rollout.gates.evaluate`, which
answers with the *first* gate that decides. An operator watching a wave bake wants every
gate at once — how many requests so far against how many are needed, how long the bake
still runs, and each figure next to its limit — so this module lays the same figures out
per gate, computed with the same limits as the verdict (the relative p99 gate's limit is
``max(ratio x baseline, baseline + p99_noise_ms)``, as in ``evaluate``).

The accuracy gates (``min_accuracy``, ``min_accuracy_vs_previous``, ``max_mae``, with
``min_labels``) are laid out the same way from the labels the sites shipped: labels so far
against those needed, then each figure next to its limit. Two of them are floors (a value
*below* the limit breaches); ``min_accuracy_vs_previous``'s limit is the previous version's
accuracy at these sites minus the allowed drop (``previous`` holds that accuracy). A gate
that does not fit the labels' kind (``max_mae`` on a classifier's) shows no value and waits,
as the verdict does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from modelfleet.hub.rollout.gates import (
    Figures,
    Gates,
    Verdict,
    accuracy_gated,
    needed_requests,
)

GateState = Literal["ok", "breached", "waiting"]


@dataclass(frozen=True)
class GateCheck:
    """One gate: the figure now against its limit, in the same unit (``unit``)."""

    gate: str
    unit: Literal["fraction", "ms", "statistic", "requests", "anomalies", "labels", "mae"]
    value: float | None  # None: not measured yet (no traffic, no baseline, no drift profile)
    limit: float | None  # what ``value`` is compared with; None while the baseline is unknown
    setting: float  # the gate as configured (for max_p99_ratio: the ratio)
    baseline_ms: float | None  # max_p99_ratio only: the previous version's p99 here
    state: GateState
    #: min_accuracy_vs_previous only: the previous version's accuracy at these sites.
    previous: float | None = None


@dataclass(frozen=True)
class WaveProgress:
    """The current wave measured now; the fields of ``modelfleet.api.WaveProgress``."""

    wave: int  # from 1
    requests: int
    errors: int
    min_requests: int  # requests needed before any verdict
    baseline_requests: int | None  # the previous version's, when the relative gate is set
    elapsed_s: float
    bake_s: float
    bake_left_s: float
    deadline_left_s: float
    pending_sites: list[str]  # wave sites not yet running the new version
    gates: list[GateCheck]
    verdict: Literal["pass", "fail", "wait"]
    message: str
    measured_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state(value: float | None, limit: float | None) -> GateState:
    if value is None or limit is None:
        return "waiting"
    return "breached" if value > limit else "ok"


def _floor_state(value: float | None, limit: float | None) -> GateState:
    if value is None or limit is None:
        return "waiting"
    return "breached" if value < limit else "ok"


def gate_checks(gates: Gates, figures: Figures, baseline: Figures | None) -> list[GateCheck]:
    """Every configured gate with its figure and limit; a figure read from fewer requests
    than the wave needs is shown but ``waiting`` (the controller does not judge it yet)."""
    needed = needed_requests(gates)
    enough = figures.requests >= needed
    checks = [
        GateCheck(
            "min_requests",
            "requests",
            float(figures.requests),
            float(needed),
            float(gates.min_requests),
            None,
            "ok" if enough else "waiting",
        )
    ]

    def judged(state: GateState) -> GateState:
        return state if enough else "waiting"

    if gates.max_error_rate is not None:
        rate = figures.error_rate if figures.requests else None
        limit = gates.max_error_rate
        checks.append(
            GateCheck(
                "max_error_rate",
                "fraction",
                rate,
                limit,
                limit,
                None,
                judged(_state(rate, limit)),
            )
        )
    if gates.max_p99_ms is not None:
        limit = gates.max_p99_ms
        checks.append(
            GateCheck(
                "max_p99_ms",
                "ms",
                figures.p99_ms,
                limit,
                limit,
                None,
                judged(_state(figures.p99_ms, limit)),
            )
        )
    if gates.max_p99_ratio is not None:
        base = baseline.p99_ms if baseline is not None else None
        base_enough = baseline is not None and baseline.requests >= needed
        limit_ms = (
            max(gates.max_p99_ratio * base, base + gates.p99_noise_ms)
            if base is not None and base_enough
            else None
        )
        checks.append(
            GateCheck(
                "max_p99_ratio",
                "ms",
                figures.p99_ms,
                limit_ms,
                gates.max_p99_ratio,
                base,
                judged(_state(figures.p99_ms, limit_ms)),
            )
        )
    if gates.max_drift is not None:
        limit = gates.max_drift
        checks.append(
            GateCheck(
                "max_drift",
                "statistic",
                figures.drift,
                limit,
                limit,
                None,
                judged(_state(figures.drift, limit)),
            )
        )
    if gates.max_anomalies is not None:
        limit = float(gates.max_anomalies)
        found = None if figures.anomalies is None else float(figures.anomalies)
        checks.append(
            GateCheck(
                "max_anomalies",
                "anomalies",
                found,
                limit,
                limit,
                None,
                judged(_state(found, limit)),
            )
        )
    if accuracy_gated(gates):
        checks.extend(_accuracy_checks(gates, figures, enough=enough))
    return checks


def _accuracy_checks(gates: Gates, figures: Figures, *, enough: bool = True) -> list[GateCheck]:
    """``min_labels`` and each accuracy gate set, judged as ``evaluate`` judges them: not
    before the wave has its requests (``enough``) and its labels, and only the gates that
    fit the labels' kind (accuracy for a classifier's, MAE for a regressor's)."""
    needed = max(gates.min_labels, 1)
    labels = figures.labels
    labelled = labels is not None and labels >= needed
    checks = [
        GateCheck(
            "min_labels",
            "labels",
            None if labels is None else float(labels),
            float(needed),
            float(gates.min_labels),
            None,
            "ok" if labelled else "waiting",
        )
    ]

    def judged(state: GateState) -> GateState:
        return state if enough and labelled else "waiting"

    metric = figures.accuracy_metric
    accuracy = figures.accuracy if metric == "accuracy" else None
    if gates.min_accuracy is not None:
        limit = gates.min_accuracy
        checks.append(
            GateCheck(
                "min_accuracy",
                "fraction",
                accuracy,
                limit,
                limit,
                None,
                judged(_floor_state(accuracy, limit)),
            )
        )
    drop = gates.min_accuracy_vs_previous
    if drop is not None:
        previous = figures.previous_accuracy if metric == "accuracy" else None
        known = previous is not None and (figures.previous_labels or 0) >= needed
        floor = previous - drop if previous is not None and known else None
        state: GateState = "waiting"
        if accuracy is not None and previous is not None and known:
            state = "breached" if previous - accuracy > drop else "ok"  # as ``evaluate``
        checks.append(
            GateCheck(
                "min_accuracy_vs_previous",
                "fraction",
                accuracy,
                floor,
                drop,
                None,
                judged(state),
                previous=previous,
            )
        )
    if gates.max_mae is not None:
        mae = figures.accuracy if metric == "mae" else None
        limit = gates.max_mae
        checks.append(
            GateCheck("max_mae", "mae", mae, limit, limit, None, judged(_state(mae, limit)))
        )
    return checks


def wave_progress(
    *,
    wave: int,
    gates: Gates,
    verdict: Verdict,
    elapsed_s: float,
    bake_s: float,
    deadline_s: float,
    pending: list[str],
    now: datetime,
) -> WaveProgress:
    figures, baseline = verdict.figures, verdict.baseline
    return WaveProgress(
        wave=wave,
        requests=figures.requests,
        errors=figures.errors,
        min_requests=needed_requests(gates),
        baseline_requests=baseline.requests if baseline is not None else None,
        elapsed_s=round(elapsed_s, 3),
        bake_s=bake_s,
        bake_left_s=round(max(bake_s - elapsed_s, 0.0), 3),
        deadline_left_s=round(max(deadline_s - elapsed_s, 0.0), 3),
        pending_sites=pending,
        gates=gate_checks(gates, figures, baseline),
        verdict=verdict.outcome,
        message=verdict.message,
        measured_at=now,
    )
