"""Each plant learns after the fact whether a machine failed, and tells the site that served
the prediction (``POST /v2/models/{m}/feedback``, docs/feedback.md). The site joins the label
with its own record of the prediction and ships only counts; the hub's accuracy per site x
version comes from those counts alone.

In the demo the truth is known a moment after the answer (``delay_s``); in a plant it is
hours or days later, which the site's feedback window (24 h by default) covers.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from modelfleet.errors import SiteError
from modelfleet.sim.demo.fleet import MODEL
from modelfleet.sim.demo.traffic import Answer, PlantLine
from modelfleet.sim.feedback import send_labels
from modelfleet.site.feedback import MAX_LABELS

log = logging.getLogger(__name__)


class FeedbackLoop(threading.Thread):
    """Every ``every_s``, posts each line's new answers' truths to the sites that served them.

    ``site_urls`` maps a site name to its URL; ``accepted`` / ``dropped`` count per site what
    the sites answered (the figures the hub's accuracy must match).
    """

    def __init__(
        self,
        lines: dict[str, PlantLine],
        site_urls: dict[str, str],
        *,
        token: str,
        ca_file: Path | None,
        every_s: float = 1.0,
        delay_s: float = 0.5,
    ) -> None:
        super().__init__(name="demo-feedback", daemon=True)
        self.lines = lines
        self.site_urls = site_urls
        self.every_s = every_s
        self.delay_s = delay_s
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        #: What was posted and accepted, per site: the demo's own accuracy to compare with.
        self.posted: dict[str, list[Answer]] = defaultdict(list)
        self._sent = dict.fromkeys(lines, 0)
        self._pending: dict[str, list[Answer]] = defaultdict(list)
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._token = token
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        )

    def stop(self) -> None:
        """Stop after one last pass, so every answer given so far is fed back."""
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.feed()
        self.feed(final=True)

    def feed(self, *, final: bool = False) -> None:
        for plant, line in self.lines.items():
            new = line.answers_since(self._sent[plant])
            if not final:  # the truth is known a moment later, not at once
                new = new[: len(new) - _young(new, self.delay_s)]
            self._sent[plant] += len(new)
            for answer in new:
                self._pending[answer.site].append(answer)
        for site in list(self._pending):
            self._pending[site] = self._post(site, self._pending[site])

    def _post(self, site: str, answers: list[Answer]) -> list[Answer]:
        """Post ``answers`` in calls the site accepts; answer what is left to post (a site
        that cannot be told now — the outage step — is told on a later pass: it remembers
        its predictions for a day)."""
        url = self.site_urls.get(site)
        if url is None:
            return []
        for start in range(0, len(answers), MAX_LABELS):
            chunk = answers[start : start + MAX_LABELS]
            try:
                totals = send_labels(
                    url,
                    MODEL,
                    [(a.request_id, a.truth) for a in chunk],
                    token=self._token,
                    verify=self._verify,
                )
            except SiteError as exc:
                log.debug("feedback to %s: %s", site, exc.message)
                return answers[start:]
            dropped = sum(totals.dropped.values())
            with self._lock:
                self.accepted[site] += totals.accepted
                self.dropped[site] += dropped
                if not dropped:
                    self.posted[site].extend(chunk)
        return []


def _young(answers: list[Answer], delay_s: float) -> int:
    """How many answers at the end of the list are younger than ``delay_s``."""
    cutoff = time.time() - delay_s
    young = 0
    for answer in reversed(answers):
        if answer.at <= cutoff:
            break
        young += 1
    return young
