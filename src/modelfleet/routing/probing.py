"""Probing: keep the latency and breaker of the sites callers need fresh, and no others.

The router remembers the data regions it has routed (so the first request of a region is
already informed, and idle sites stay measured), and every ``probe_interval_s`` probes
(``GET /v2/health/ready``) the idle sites those regions permit. Data regions come from
callers (the SDK's ``data_region``, the gateway's ``x-modelfleet-data-region`` header), so
what is remembered must not grow with what callers send:

- a region that permits no site (no site of its jurisdiction, no rule sending it anywhere)
  is not remembered: it gets its residency refusal and costs nothing afterwards;
- at most :data:`MAX_REMEMBERED_REGIONS` are remembered, the least recently used going first
  (a forgotten region is warmed again on its next request). Only regions that permit a site
  count, so the real bound is the residency rules' keys plus the sites' jurisdictions plus
  ``*``; the cap holds even for a rules file with thousands of keys.

Probes go to distinct sites, never once per region: probe traffic follows the fleet's size,
not the callers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from modelfleet.errors import TransportFailure
from modelfleet.routing.directory import Site
from modelfleet.routing.selection import Selector
from modelfleet.transport.client import Origin, Pool

__all__ = ["MAX_REMEMBERED_REGIONS", "Prober"]

#: Data regions the router keeps warm at most (see the module docstring).
MAX_REMEMBERED_REGIONS = 256


class Prober:
    """The remembered regions and the probes of their permitted sites, for one router."""

    def __init__(
        self,
        selector: Selector,
        pool: Pool,
        sites: Callable[[], list[Site]],
        origin: Callable[[Site], Origin],
        *,
        interval_s: float = 2.0,
        timeout_s: float = 1.0,
        max_regions: int = MAX_REMEMBERED_REGIONS,
    ) -> None:
        """``sites``: the directory's current sites; ``origin``: where to reach one (the
        router's, so probes and requests share connections and the peer check)."""
        self.selector = selector
        self.pool = pool
        self._sites = sites
        self._origin = origin
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_regions = max_regions
        #: Remembered data regions, least recently used first.
        self.regions: OrderedDict[str, None] = OrderedDict()
        #: Probes sent since start (``/metrics``): it must follow the sites, not the callers.
        self.probes = 0

    @property
    def remembered(self) -> int:
        return len(self.regions)

    def targets(self) -> list[Site]:
        """The distinct sites the remembered regions permit: what the loop keeps measured."""
        sites = self._sites()
        unique: dict[str, Site] = {}
        for region in self.regions:
            for site in self.selector.permitted(sites, region):
                unique.setdefault(site.name, site)
        return list(unique.values())

    async def warm(self, region: str) -> None:
        """Before routing a request for ``region`` (already checked by the grammar): on its
        first use, remember it and probe its unmeasured permitted sites, so the first pick
        is informed; a region that permits no site is left unremembered."""
        if region in self.regions:
            self.regions.move_to_end(region)
            return
        permitted = self.selector.permitted(self._sites(), region)
        if not permitted:
            return
        self.regions[region] = None
        while len(self.regions) > self.max_regions:
            self.regions.popitem(last=False)
        unmeasured = [s for s in permitted if self.selector.stats_for(s.name).ewma_s is None]
        if unmeasured:
            await asyncio.gather(*(self.probe(s) for s in unmeasured))

    async def probe(self, site: Site) -> bool:
        """``GET /v2/health/ready``; feeds the latency EWMA and the breaker."""
        self.probes += 1
        stats = self.selector.stats_for(site.name)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.pool.request(self._origin(site), "GET", "/v2/health/ready")
        except (TransportFailure, TimeoutError) as exc:
            definitive = isinstance(exc, TransportFailure) and "cannot connect" in str(exc)
            stats.breaker.failure(time.monotonic(), definitive=definitive)
            return False
        if response.status != 200:
            stats.breaker.failure(time.monotonic())
            return False
        stats.observe(time.perf_counter() - started, self.selector.alpha, real=False)
        stats.breaker.success()
        return True

    async def run(self) -> None:
        """Every ``interval_s``: probe the targets that carried no traffic lately, and those
        whose breaker is open once their cooldown allows a trial."""
        while True:
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            due = []
            for site in self.targets():
                stats = self.selector.stats_for(site.name)
                idle = now - stats.last_used >= self.interval_s
                if (idle or stats.breaker.is_open) and stats.breaker.allows(now):
                    due.append(site)
            if due:
                with contextlib.suppress(Exception):
                    await asyncio.gather(*(self.probe(s) for s in due))
