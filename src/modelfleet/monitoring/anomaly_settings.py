"""The anomaly detector's settings, per model: every value bounded, validated with a
clear message (kept apart from ``anomaly.py`` so the detector stays one readable module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfleet.errors import InvalidInput

__all__ = ["SETTING_NAMES", "AnomalySettings", "check_settings"]


class AnomalySettings(BaseModel):
    """How sensitive the detector is for one model; every value bounded."""

    model_config = ConfigDict(extra="forbid")

    sensitivity: float = Field(
        default=4.0,
        ge=1.0,
        le=20.0,
        description="Robust z-score a bucket must reach to be anomalous (lower: more alerts).",
    )
    warmup: int = Field(
        default=10, ge=3, le=1000, description="Values of a series before it is judged at all."
    )
    history: int = Field(
        default=60, ge=3, le=1440, description="Values of a series its baseline median reads."
    )
    bucket_s: float = Field(
        default=60.0, ge=10.0, le=3600.0, description="Seconds of windows per bucket."
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Requests (values) a bucket needs before rates, p99 and sketches count.",
    )
    stuck_windows: int = Field(
        default=6,
        ge=2,
        le=1000,
        description="Consecutive windows with traffic where an input has min == max.",
    )
    clear_buckets: int = Field(
        default=2, ge=1, le=100, description="Normal buckets in a row that end an anomaly."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnomalySettings:
        if self.history < self.warmup:
            raise ValueError("history must be at least warmup")
        return self


SETTING_NAMES = tuple(AnomalySettings.model_fields)


def check_settings(values: Mapping[str, Any]) -> AnomalySettings:
    """Validate settings (a full or partial set over the defaults); ``InvalidInput`` if bad."""
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise InvalidInput(
            f"unknown anomaly setting {unknown[0]!r}; known: {', '.join(SETTING_NAMES)}"
        )
    try:
        return AnomalySettings.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise InvalidInput(f"invalid anomaly setting {where}: {first['msg']}") from None
