"""Accuracy from fed-back labels (``GET /api/v1/accuracy``, docs/feedback.md)."""

from __future__ import annotations

from datetime import datetime

from modelfleet.api._base import Record

__all__ = ["AccuracyPoint", "AccuracyReport", "SiteAccuracy"]


class SiteAccuracy(Record):
    """One site x version over the labels since the report's ``since``."""

    site: str
    version: int
    metric: str  # "accuracy" (classifiers) | "mae" (regressors)
    value: float | None  # None when only drops arrived
    count: int
    dropped: dict[str, int]


class AccuracyPoint(Record):
    """One bucket of one site x version, for charts."""

    site: str
    version: int
    metric: str
    at: datetime  # the bucket's start
    value: float
    count: int


class AccuracyReport(Record):
    model: str
    since: datetime
    bucket_s: float
    figures: list[SiteAccuracy]
    series: list[AccuracyPoint]
