"""Site selection: residency -> model ready -> online -> healthy -> lowest latency.

The order is a contract. Residency is a hard filter that nothing relaxes (the fleet's
policies from the directory, narrowed by the caller's local rules: ``routing/residency.py``);
a site known not to serve the model is skipped; among the rest, sites the hub sees online
come first, and among those, sites whose circuit breaker is closed, ordered by an
exponentially weighted moving average (EWMA) of measured latency. Sites whose breaker is open
follow as a fallback, so a request is not refused while a permitted site might have
recovered.

**Offline sites are a last resort, never a way around residency.** A site the hub marks
offline (it stopped reporting) is ranked after every online candidate: it is tried only when
none of them answered, it has passed the same residency filter as the others, and the router
dials it expecting that site's own certificate (``router.py``), so a stale URL that now
leads to another site, of another jurisdiction say, is refused before the request is sent.
It stays a candidate because a site that lost the hub keeps serving (sites are autonomous),
and refusing its permitted data then would turn a hub outage into an inference outage.

Latency samples come from real requests and from light probes (``GET /v2/health/ready``) the
client sends to sites that carry no traffic. A probe measures round-trip time without model
work, so an idle site looks a little faster than a busy one; that only matters between sites
within a fraction of a millisecond of each other, where spreading the load is harmless.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelfleet.errors import NoSiteAvailable
from modelfleet.routing.directory import Site
from modelfleet.routing.residency import FleetResidency, Residency, ResidencyRules

__all__ = [
    "MAX_MISSING_MODELS",
    "Breaker",
    "Ranking",
    "Selector",
    "SiteStats",
]

log = logging.getLogger(__name__)


@dataclass
class Breaker:
    """Per-site circuit breaker.

    Closed until ``threshold`` consecutive failures (a refused connection counts as
    ``threshold``: the site is certainly down). Then open for ``cooldown_s``, doubling on each
    failed trial up to ``max_cooldown_s``; after the cooldown one trial request (or probe) is
    let through (half-open) and its outcome closes or re-opens the breaker.
    """

    threshold: int = 3
    cooldown_s: float = 1.0
    max_cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    current_cooldown_s: float = 0.0
    trial_in_flight: bool = False

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        return now - self.opened_at >= self.current_cooldown_s and not self.trial_in_flight

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.current_cooldown_s = 0.0
        self.trial_in_flight = False

    def failure(self, now: float, *, definitive: bool = False) -> None:
        self.failures += self.threshold if definitive else 1
        self.trial_in_flight = False
        if self.opened_at is not None:
            self.current_cooldown_s = min(self.current_cooldown_s * 2, self.max_cooldown_s)
            self.opened_at = now
        elif self.failures >= self.threshold:
            self.opened_at = now
            self.current_cooldown_s = self.cooldown_s


#: How many model names one site is remembered not to serve: a caller can send any number of
#: names, and each 404 would otherwise keep one more entry.
MAX_MISSING_MODELS = 256


@dataclass
class SiteStats:
    """What the client has measured about one site."""

    ewma_s: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=128))
    breaker: Breaker = field(default_factory=Breaker)
    last_used: float = 0.0
    requests: int = 0
    failures: int = 0
    #: Model name -> until when this site is known not to serve it (a 404 said so). Names
    #: come from requests, so at most :data:`MAX_MISSING_MODELS` are remembered.
    missing_models: dict[str, float] = field(default_factory=dict)
    _p95: float | None = None
    _p95_at: int = -1

    def model_missing(self, model: str, until: float, now: float) -> None:
        """Remember that this site does not serve ``model`` until ``until``. Expired
        entries go first; past the bound, the one that expires soonest makes room."""
        if model not in self.missing_models and len(self.missing_models) >= MAX_MISSING_MODELS:
            for name in [n for n, t in self.missing_models.items() if t <= now]:
                del self.missing_models[name]
            if len(self.missing_models) >= MAX_MISSING_MODELS:
                soonest = min(self.missing_models, key=self.missing_models.__getitem__)
                del self.missing_models[soonest]
        self.missing_models[model] = until

    def observe(self, seconds: float, alpha: float, *, real: bool = True) -> None:
        self.ewma_s = (
            seconds if self.ewma_s is None else alpha * seconds + (1 - alpha) * self.ewma_s
        )
        if real:
            self.recent.append(seconds)
            self.requests += 1

    def p95(self, min_samples: int) -> float | None:
        """95th percentile of recent real requests; recomputed every 8 samples (cheap)."""
        n = len(self.recent)
        if n < min_samples:
            return None
        if self._p95 is None or self.requests - self._p95_at >= 8:
            ordered = sorted(self.recent)
            self._p95 = ordered[min(n - 1, int(0.95 * n))]
            self._p95_at = self.requests
        return self._p95


@dataclass(frozen=True)
class Ranking:
    """Candidates in order of preference, plus why the others were left out."""

    sites: list[Site]
    data_region: str
    rule: str
    excluded_by_residency: list[str]
    without_model: list[str]
    #: Permitted sites the hub sees offline: ranked last, after every online one.
    offline: list[str] = field(default_factory=list)


class Selector:
    """Ranks sites for a request; holds the per-site measurements."""

    def __init__(
        self,
        rules: ResidencyRules | None = None,
        *,
        fleet: Callable[[], FleetResidency] = FleetResidency,
        alpha: float = 0.3,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 1.0,
        missing_model_ttl_s: float = 10.0,
    ) -> None:
        #: The caller's local rules: they only narrow what the ``fleet`` permits.
        self.rules = rules or ResidencyRules()
        self._fleet = fleet
        self._residency: Residency | None = None  # built on first use, after the directory
        self.alpha = alpha
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown_s = breaker_cooldown_s
        self.missing_model_ttl_s = missing_model_ttl_s
        self.stats: dict[str, SiteStats] = {}

    def stats_for(self, site: str) -> SiteStats:
        stats = self.stats.get(site)
        if stats is None:
            breaker = Breaker(self.breaker_threshold, self.breaker_cooldown_s)
            stats = self.stats[site] = SiteStats(breaker=breaker)
        return stats

    @property
    def residency(self) -> Residency:
        """The rules in force: the fleet's policies as last fetched (or cached), narrowed
        by the local rules; rebuilt only when the directory brought other policies."""
        fleet = self._fleet()
        if self._residency is None or fleet != self._residency.fleet:
            self._residency = Residency(fleet, self.rules)
            for region, extra in self._residency.ignored().items():
                log.warning(
                    "local residency rule for %s (from %s) lists %s, which the fleet's "
                    "policies do not permit: ignored, local rules only narrow them",
                    region,
                    self.rules.source,
                    ", ".join(extra),
                )
        return self._residency

    def permitted(self, sites: Iterable[Site], data_region: str) -> list[Site]:
        residency = self.residency
        return [s for s in sites if residency.permits(data_region, s.labels)]

    def rank(
        self,
        sites: Iterable[Site],
        model: str,
        data_region: str,
        version: int | None = None,
        now: float | None = None,
    ) -> Ranking:
        now = time.monotonic() if now is None else now
        residency = self.residency
        excluded: list[str] = []
        without: list[str] = []
        offline: list[str] = []
        keyed: list[tuple[tuple[int, int, float, str], Site]] = []
        for site in sites:
            if not residency.permits(data_region, site.labels):
                excluded.append(site.name)
                continue
            stats = self.stats_for(site.name)
            missing_until = stats.missing_models.get(model)
            if site.serves(model, version) is False or (
                missing_until is not None and missing_until > now
            ):
                without.append(site.name)
                continue
            # closed, or half-open and due for its trial: ranked by latency with the rest
            healthy = 0 if stats.breaker.allows(now) else 1
            latency = stats.ewma_s if stats.ewma_s is not None else 1e3
            if not site.online:
                offline.append(site.name)
            keyed.append(((0 if site.online else 1, healthy, latency, site.name), site))
        keyed.sort(key=lambda item: item[0])
        return Ranking(
            [site for _, site in keyed],
            data_region,
            residency.describe(data_region),
            excluded,
            without,
            offline,
        )

    def no_site(self, ranking: Ranking, model: str, tried: dict[str, str]) -> NoSiteAvailable:
        """The error for a request no permitted site could serve; names the rule."""
        parts = [
            f"no site may serve model {model!r} for data region {ranking.data_region}: "
            f"{ranking.rule}"
        ]
        if tried:
            parts.append("tried " + ", ".join(f"{k} ({v})" for k, v in tried.items()))
        if ranking.without_model:
            parts.append("without the model: " + ", ".join(ranking.without_model))
        if ranking.offline:
            parts.append("offline at the hub (tried last): " + ", ".join(ranking.offline))
        if not tried and not ranking.without_model:
            parts.append("no permitted site is in the directory")
        if ranking.excluded_by_residency:
            parts.append(
                f"{len(ranking.excluded_by_residency)} site(s) outside the permitted "
                f"jurisdictions were not considered ({', '.join(ranking.excluded_by_residency)})"
            )
        return NoSiteAvailable("; ".join(parts))
