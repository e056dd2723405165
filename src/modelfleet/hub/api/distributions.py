"""One feature's reference vs current distribution at one site, from the sketches only.

- ``GET /api/v1/telemetry/drift/{model}/features/{feature}?site=S&version=V&stat=&bins=``

The drift report (``/api/v1/telemetry/drift/{model}``) gives a feature's statistics; this
gives what they were computed from: the version's reference sketch and the merged sketches
of the site's windows in the model's drift window, read at the same points (see
:mod:`modelfleet.monitoring.distributions`). No row exists at the hub, so nothing here is
more exact than the sketches. The dashboard's feature page draws the same document.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from modelfleet.api.distributions import FeatureDistribution
from modelfleet.errors import NotFound
from modelfleet.hub.api.deps import Caller, Context, VersionQuery
from modelfleet.hub.auth import Permission
from modelfleet.hub.context import HubContext
from modelfleet.monitoring import drift
from modelfleet.monitoring.distributions import DEFAULT_BINS, MAX_BINS, distribution
from modelfleet.monitoring.profiles import DatasetProfile
from modelfleet.refs import check_name

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

#: What the page and the API say about every figure they show.
APPROXIMATE = (
    "read from sketches, not rows: numeric ranks (PMF, CDF, quantiles) are within the KLL "
    "sketch's rank_error (99 % confidence); category counts within error x total"
)

Stat = Literal["psi", "ks", "js"]


def _pick_version(ctx: HubContext, model: str, site: str, since: datetime) -> int:
    """The newest version with windows at the site in the drift window, else the newest
    registered version."""
    seen = [w.version for w in ctx.telemetry.repo.windows(site=site, model=model, since=since)]
    if seen:
        return max(seen)
    versions = ctx.registry.versions(model)
    if not versions:
        raise NotFound(f"model {model!r} has no version")
    return versions[-1].version


def _check_site(ctx: HubContext, site: str) -> None:
    check_name(site, "site name")
    try:
        ctx.sites.get(site)
    except NotFound:
        if not ctx.telemetry.repo.totals(site):  # a removed site's telemetry stays readable
            raise


def feature_distribution(
    ctx: HubContext,
    model: str,
    site: str,
    feature: str,
    version: int | None = None,
    stat: str | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The document of ``GET .../features/{feature}``; NotFound naming what is unknown."""
    ctx.registry.model(model)
    _check_site(ctx, site)
    thresholds = ctx.telemetry.thresholds(model)
    since = datetime.now(UTC) - timedelta(seconds=thresholds["window_s"])
    number = version if version is not None else _pick_version(ctx, model, site, since)
    if version is not None and ctx.registry.version(model, number) is None:
        raise NotFound(f"model {model!r} has no version {number}")
    windows = ctx.telemetry.repo.windows(
        site=site, model=model, version=number, since=since, with_profiles=True
    )
    inputs, outputs = DatasetProfile(), DatasetProfile()
    for window in windows:
        profiles = window.profiles or {}
        inputs.merge(DatasetProfile.from_dict({"columns": profiles.get("inputs", {})}))
        outputs.merge(DatasetProfile.from_dict({"columns": profiles.get("outputs", {})}))
    reference_doc = ctx.telemetry.repo.get_reference(model, number)
    reference = DatasetProfile.from_dict(reference_doc) if reference_doc else DatasetProfile()
    role = "output" if feature in outputs.columns and feature not in inputs.columns else "input"
    current = (outputs if role == "output" else inputs).columns.get(feature)
    ref = reference.columns.get(feature)
    if ref is None and current is None:
        known = sorted(set(reference.columns) | set(inputs.columns) | set(outputs.columns))
        raise NotFound(
            f"feature {feature!r} is not in {model}:{number}'s reference profile nor in "
            f"{site}'s recent telemetry"
            + (f" (features: {', '.join(known[:20])})" if known else "")
        )
    label = reference.labels.get(feature)
    verdict = None
    if ref is not None and current is not None:
        verdict = drift.compare_column(feature, role, ref, current, thresholds, label).to_dict()
    return {
        "model": model,
        "version": number,
        "site": site,
        "feature": feature,
        "label": label,
        "stat": stat,
        "since": since,
        "windows": len(windows),
        "thresholds": thresholds,
        "drift": verdict,
        "approximate": APPROXIMATE,
        **distribution(ref, current, bins),
    }


@router.get(
    "/telemetry/drift/{model}/features/{feature}",
    response_model=FeatureDistribution,
    summary="One feature's reference vs current distribution at a site, from its sketches",
)
async def get_feature_distribution(
    model: str,
    feature: Annotated[str, Path(min_length=1, max_length=256, description="Feature name.")],
    ctx: Context,
    caller: Caller,
    site: Annotated[str, Query(min_length=1, max_length=255, description="Site name.")],
    version: VersionQuery = None,
    stat: Annotated[Stat | None, Query(description="The statistic the caller shows.")] = None,
    bins: Annotated[int, Query(ge=1, le=MAX_BINS, description="PMF bins.")] = DEFAULT_BINS,
) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    result: dict[str, Any] = await run_in_threadpool(
        feature_distribution, ctx, model, site, feature, version, stat, bins
    )
    return result
