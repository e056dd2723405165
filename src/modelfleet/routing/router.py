"""The routing engine shared by the SDK and the gateway: pick, send, retry, hedge.

One request goes through :meth:`Router.send`:

1. The data region is checked against the region grammar
   (:func:`~modelfleet.routing.residency.check_data_region`: a 400, before anything is
   remembered), the :class:`~modelfleet.routing.probing.Prober` warms it on first use, and
   :class:`~modelfleet.routing.selection.Selector` ranks the sites the fleet's residency
   policies (from the directory) and the caller's local rules permit, online sites first.
2. The best one gets the request, tagged ``x-request-id`` (the same for every attempt) and
   ``x-modelfleet-attempt`` (1, 2, ...; ``x-modelfleet-hedge: 1`` on a hedge), so a retried or
   hedged request is recognisable in site telemetry and logs.
3. If it has not answered after its recent p95 latency (and the hedge budget allows), the
   same request goes to the next site too; the first answer wins and the other attempt is
   cancelled (its connection is closed, so the site sees the client go away).
4. A connection error, a timeout or a 5xx moves on to the next site at once, while the
   request's deadline lasts. A 404 "model not found" marks the model missing on that site for
   a while and moves on too. Any other 4xx is the caller's problem and is returned as is.
5. When every permitted site has failed, :class:`NoSiteAvailable` names the residency rule
   and what happened at each site; residency is never relaxed.

Every ``https://`` site is dialled expecting the certificate of the site chosen (its name,
issued by the fleet CA), so a directory entry whose URL leads to another site is refused
before the request is written: data chosen for an IN site never reaches an EU one, whatever
URL the entry carries. Plain ``http://`` sites (a hub run with ``--insecure-http``, loopback
only) cannot be checked this way; that mode is for development.

The router runs on one event loop (its connections belong to it); the sync SDK drives it from
a private loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelfleet.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelfleetError,
    PermissionDenied,
    TransportFailure,
)
from modelfleet.oip.headers import ATTEMPT_HEADER, HEDGE_HEADER, REQUEST_ID_HEADER
from modelfleet.pki.identity import site_identity
from modelfleet.pki.tls import TlsFiles
from modelfleet.routing.directory import Site, SiteDirectory
from modelfleet.routing.probing import Prober
from modelfleet.routing.residency import ResidencyRules, check_data_region
from modelfleet.routing.selection import Ranking, Selector
from modelfleet.transport.client import HttpResponse, Origin, Pool

__all__ = [
    "Routed",
    "Router",
    "RouterCounters",
    "RoutingOptions",
]

log = logging.getLogger(__name__)


@dataclass
class RoutingOptions:
    """Knobs of the routing engine (defaults suit interactive inference)."""

    deadline_s: float = 10.0
    hedge: bool = True
    #: Never hedge earlier than this, whatever the p95 says (scheduling noise on loopback).
    hedge_min_s: float = 0.002
    #: Real requests a site needs before its p95 is trusted for hedging.
    hedge_min_samples: int = 10
    #: Hedges allowed per request, on average (a token bucket; bounds the extra load).
    hedge_budget: float = 0.1
    #: Without a usable p95, a second attempt starts after this share of the deadline.
    fallback_after: float = 0.5
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 1.0
    refresh_interval_s: float = 15.0
    #: With no permitted ready site, refresh the directory at once, but not more often.
    on_demand_refresh_s: float = 1.0
    ewma_alpha: float = 0.3
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 1.0


@dataclass
class RouterCounters:
    requests: int = 0
    attempts: int = 0
    retries: int = 0
    hedges: int = 0
    hedges_won: int = 0
    cancelled: int = 0
    failed: int = 0
    no_site: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Routed:
    """A site's answer and how it was obtained."""

    response: HttpResponse
    site: Site
    request_id: str
    attempts: int
    hedged: bool
    latency_s: float
    tried: dict[str, str] = field(default_factory=dict)


@dataclass
class _Attempt:
    site: Site
    started: float
    number: int
    hedge: bool


class Router:
    """Selection, retries and hedging over a :class:`SiteDirectory`."""

    def __init__(
        self,
        directory: SiteDirectory,
        *,
        rules: ResidencyRules | None = None,
        options: RoutingOptions | None = None,
        tls: TlsFiles | None = None,
        token: str | None = None,
    ) -> None:
        """``tls``: the fleet CA to verify ``https://`` sites against (and this caller's
        client certificate, for a gateway); None: the system's roots. ``token``: the infer
        token every request to a site carries (sites require a credential)."""
        self.directory = directory
        self._authorization = f"Bearer {token}" if token else None
        self.options = options or RoutingOptions()
        opts = self.options
        self.selector = Selector(
            rules,
            # The fleet's policies travel with the directory (and its disk copy).
            fleet=lambda: self.directory.residency,
            alpha=opts.ewma_alpha,
            breaker_threshold=opts.breaker_threshold,
            breaker_cooldown_s=opts.breaker_cooldown_s,
        )
        self.counters = RouterCounters()
        self.pool = Pool(connect_timeout_s=opts.probe_timeout_s * 2, tls=tls)
        self._origins: dict[str, Origin] = {}
        self.prober = Prober(
            self.selector,
            self.pool,
            lambda: self.directory.sites,
            self._origin,
            interval_s=opts.probe_interval_s,
            timeout_s=opts.probe_timeout_s,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Future[HttpResponse]] = set()
        self._hedge_tokens = 1.0
        self._started = False
        self._last_refresh = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the directory (hub, else disk cache) and start probing and refreshing."""
        if self._started:
            return
        self._started = True
        if not self.directory.static:
            await asyncio.to_thread(self.directory.refresh)
        self._tasks.append(asyncio.create_task(self.prober.run()))
        if not self.directory.static:
            self._tasks.append(asyncio.create_task(self._refresh_loop()))

    def _forget(self, task: asyncio.Future[HttpResponse]) -> None:
        """Done callback of every attempt: a cancelled loser may still end with an error;
        retrieving it here keeps asyncio from logging "exception was never retrieved"."""
        self._attempts.discard(task)
        if not task.cancelled():
            task.exception()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for attempt in self._attempts:
            attempt.cancel()
        pending: list[asyncio.Future[Any]] = [*self._tasks, *self._attempts]
        for future in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await future
        self._tasks.clear()
        self.pool.close()
        self.directory.close()
        self._started = False

    @property
    def sites(self) -> list[Site]:
        return self.directory.sites

    def _origin(self, site: Site) -> Origin:
        """Where to send, and over TLS whom to expect: the certificate must name the site
        chosen, so a URL that now leads to another site (another jurisdiction's, say) is
        refused before a byte of the request is sent."""
        key = f"{site.name}\n{site.url}"
        origin = self._origins.get(key)
        if origin is None:
            identity = site_identity(site.name) if site.url.startswith("https://") else None
            origin = self._origins[key] = Origin.parse(site.url, identity)
        return origin

    # ------------------------------------------------------------------ routing

    def rank(self, model: str, data_region: str, version: int | None = None) -> Ranking:
        return self.selector.rank(self.sites, model, data_region, version)

    async def send(
        self,
        model: str,
        path: str,
        *,
        data_region: str,
        method: str = "POST",
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
        only: Collection[str] | None = None,
    ) -> Routed:
        """Send ``method path`` for ``model`` to the best permitted site; see the module doc.
        ``only``: the sites this caller may reach (a gateway caller's scoped token)."""
        if not data_region:
            raise InvalidInput(
                "no data region: pass data_region (e.g. 'EU'), or '*' for data without "
                "residency constraints"
            )
        region = check_data_region(data_region)
        if not self._started:
            await self.start()
        self.counters.requests += 1
        self._hedge_tokens = min(10.0, self._hedge_tokens + self.options.hedge_budget)
        await self.prober.warm(region)
        ranking = self._ranked(model, region, version, only)
        if not ranking.sites and await self._refresh_now():
            # A model deployed since the last refresh is found without waiting for it.
            ranking = self._ranked(model, region, version, only)
        if not ranking.sites:
            self.counters.no_site += 1
            raise self.selector.no_site(ranking, model, {})
        rid = request_id or uuid.uuid4().hex
        base = dict(headers or {})
        base[REQUEST_ID_HEADER] = rid
        if self._authorization is not None:
            base["authorization"] = self._authorization
        return await self._race(
            ranking, model, method, path, body, base, rid, deadline_s or self.options.deadline_s
        )

    def _ranked(
        self, model: str, region: str, version: int | None, only: Collection[str] | None
    ) -> Ranking:
        ranking = self.rank(model, region, version)
        if only is None:
            return ranking
        allowed = [site for site in ranking.sites if site.name in only]
        if ranking.sites and not allowed:
            raise PermissionDenied(
                f"this token may not call model {model!r} at any site that serves it "
                f"({', '.join(s.name for s in ranking.sites)})"
            )
        return dataclasses.replace(ranking, sites=allowed)

    async def _race(
        self,
        ranking: Ranking,
        model: str,
        method: str,
        path: str,
        body: bytes,
        base: dict[str, str],
        rid: str,
        deadline_s: float,
    ) -> Routed:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + deadline_s
        candidates = list(ranking.sites)
        inflight: dict[asyncio.Task[HttpResponse], _Attempt] = {}
        tried: dict[str, str] = {}
        number = 0
        hedged = False

        def launch(hedge: bool) -> None:
            nonlocal number
            site = candidates.pop(0)
            number += 1
            headers = {**base, ATTEMPT_HEADER: str(number)}
            if hedge:
                headers[HEDGE_HEADER] = "1"
            stats = self.selector.stats_for(site.name)
            if stats.breaker.is_open:
                stats.breaker.trial_in_flight = True
            stats.last_used = time.monotonic()
            task = asyncio.ensure_future(
                self.pool.request(self._origin(site), method, path, body, headers)
            )
            self._attempts.add(task)
            task.add_done_callback(self._forget)
            inflight[task] = _Attempt(site, loop.time(), number, hedge)
            self.counters.attempts += 1
            if number > 1 and not hedge:
                self.counters.retries += 1

        launch(False)
        try:
            while inflight:
                now = loop.time()
                remaining = deadline - now
                if remaining <= 0:
                    break
                wait = remaining
                second_at: float | None = None
                if candidates and len(inflight) == 1 and not hedged:
                    first = next(iter(inflight.values()))
                    second_at = first.started + self._second_attempt_after(first.site, deadline_s)
                    wait = min(wait, max(0.0, second_at - now))
                done, _ = await asyncio.wait(
                    inflight, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    if second_at is not None and loop.time() >= second_at and candidates:
                        hedged = True
                        self.counters.hedges += 1
                        self._hedge_tokens -= 1.0
                        launch(True)
                    continue
                for task in done:
                    attempt = inflight.pop(task)
                    result = self._outcome(task, attempt, model, loop.time())
                    if isinstance(result, HttpResponse):
                        if attempt.hedge:
                            self.counters.hedges_won += 1
                        return Routed(
                            result,
                            attempt.site,
                            rid,
                            number,
                            hedged,
                            loop.time() - started,
                            tried,
                        )
                    tried[attempt.site.name] = result
                # A failure moves on at once; a slow attempt still in flight keeps racing.
                if candidates and len(inflight) < 2:
                    launch(False)
        finally:
            self._cancel(inflight, loop.time())
        self.counters.failed += 1
        if loop.time() >= deadline:
            where = ", ".join(f"{k} ({v})" for k, v in tried.items()) or "no answer yet"
            raise DeadlineExceeded(
                f"model {model!r}: no answer within {deadline_s:g}s (request {rid}; {where})"
            )
        self.counters.no_site += 1
        raise self.selector.no_site(ranking, model, tried)

    def _second_attempt_after(self, site: Site, deadline_s: float) -> float:
        """When to hedge (p95) or, without a usable p95, start a fallback attempt."""
        opts = self.options
        if opts.hedge and self._hedge_tokens >= 1.0:
            p95 = self.selector.stats_for(site.name).p95(opts.hedge_min_samples)
            if p95 is not None:
                return max(p95, opts.hedge_min_s)
        return deadline_s * opts.fallback_after

    def _outcome(
        self, task: asyncio.Task[HttpResponse], attempt: _Attempt, model: str, now: float
    ) -> HttpResponse | str:
        """The response to return, or why this site failed (and the bookkeeping)."""
        stats = self.selector.stats_for(attempt.site.name)
        elapsed = now - attempt.started
        exc = task.exception()
        if exc is not None:
            stats.failures += 1
            definitive = isinstance(exc, TransportFailure) and "cannot connect" in str(exc)
            stats.breaker.failure(time.monotonic(), definitive=definitive)
            if not isinstance(exc, TransportFailure | OSError):
                log.warning("attempt on %s failed: %r", attempt.site.name, exc)
            return f"connection: {exc}"
        response = task.result()
        if response.status >= 500:
            stats.failures += 1
            stats.breaker.failure(time.monotonic())
            return f"HTTP {response.status}"
        if response.status == 404 and _model_missing(response):
            now = time.monotonic()
            stats.model_missing(model, now + self.selector.missing_model_ttl_s, now)
            stats.breaker.success()
            return "model not served"
        stats.breaker.success()
        stats.observe(elapsed, self.selector.alpha)
        return response

    def _cancel(self, inflight: dict[asyncio.Task[HttpResponse], _Attempt], now: float) -> None:
        for task, attempt in inflight.items():
            task.cancel()
            self.counters.cancelled += 1
            # A censored sample: the site took at least this long. It pushes a slow site's
            # EWMA up without polluting its p95 of completed requests.
            self.selector.stats_for(attempt.site.name).observe(
                now - attempt.started, self.selector.alpha, real=False
            )
            attempt_stats = self.selector.stats_for(attempt.site.name)
            attempt_stats.breaker.trial_in_flight = False
        inflight.clear()

    async def _refresh_now(self) -> bool:
        """Refresh the directory on demand, at most once per ``on_demand_refresh_s``."""
        now = time.monotonic()
        if self.directory.static or now - self._last_refresh < self.options.on_demand_refresh_s:
            return False
        self._last_refresh = now
        try:
            await asyncio.to_thread(self.directory.refresh)
        except ModelfleetError as exc:
            log.debug("on-demand directory refresh failed: %s", exc.message)
            return False
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_interval_s)
            try:
                await asyncio.to_thread(self.directory.refresh)
            except ModelfleetError as exc:
                log.debug("directory refresh failed: %s", exc.message)

    def snapshot(self) -> list[dict[str, object]]:
        """Per-site measurements, for ``/metrics``, debugging and the benchmark."""
        out: list[dict[str, object]] = []
        for site in self.sites:
            stats = self.selector.stats_for(site.name)
            out.append(
                {
                    "site": site.name,
                    "jurisdiction": site.jurisdiction,
                    "ewma_ms": None if stats.ewma_s is None else round(stats.ewma_s * 1e3, 3),
                    "p95_ms": None if (p := stats.p95(1)) is None else round(p * 1e3, 3),
                    "breaker_open": stats.breaker.is_open,
                    "requests": stats.requests,
                    "failures": stats.failures,
                }
            )
        return out


def _model_missing(response: HttpResponse) -> bool:
    """A site's 404 for an unknown model (not an unknown endpoint)."""
    text = response.body[:300].decode("utf-8", "replace").lower()
    return "model" in text
