"""Health gates of a rollout step, and the protocol that feeds them figures.

A step is judged on the new version's monitoring data at the step's sites since the step
started: error rate, p99 latency (absolute, or relative to the previous version at the same
sites), a minimum request count below which nothing is concluded, and optionally drift.

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
    max_p99_ms: float | None = Field(default=None, gt=0)
    max_p99_ratio: float | None = Field(
        default=None, gt=0, description="p99 at most this times the previous version's."
    )
    min_requests: int = Field(default=0, ge=0)
    max_drift: float | None = Field(default=None, ge=0)


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
    ) -> Figures:
        """Merged figures of ``model:version`` at ``sites`` in ``[since, until)``; the
        drift statistic only when ``drift`` is asked for (it costs sketch merges)."""
        ...


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["pass", "fail", "wait"]
    gate: str | None
    message: str
    figures: Figures
    baseline_p99_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "gate": self.gate,
            "message": self.message,
            "figures": self.figures.as_dict(),
            "baseline_p99_ms": self.baseline_p99_ms,
        }


def evaluate(gates: Gates, figures: Figures, baseline_p99_ms: float | None) -> Verdict:
    """Judge ``figures`` against ``gates``; ``baseline_p99_ms`` feeds the relative p99 gate."""

    def verdict(outcome: Literal["pass", "fail", "wait"], gate: str | None, msg: str) -> Verdict:
        return Verdict(outcome, gate, msg, figures, baseline_p99_ms)

    needed = max(gates.min_requests, 1 if _needs_traffic(gates) else 0)
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
    if ratio is not None and p99 is not None and baseline_p99_ms and p99 > ratio * baseline_p99_ms:
        return verdict(
            "fail",
            "max_p99_ratio",
            f"p99 {p99:.1f} ms > {ratio:g} x previous version's {baseline_p99_ms:.1f} ms",
        )
    drift, max_drift = figures.drift, gates.max_drift
    if max_drift is not None and drift is not None and drift > max_drift:
        return verdict("fail", "max_drift", f"drift {drift:.3f} > {max_drift:g}")
    return verdict("pass", None, "all gates hold")


def _needs_traffic(gates: Gates) -> bool:
    """A gate on rates or latency means nothing without at least one request."""
    return any(
        v is not None
        for v in (gates.max_error_rate, gates.max_p99_ms, gates.max_p99_ratio, gates.max_drift)
    )
