"""Send labels to a site's feedback endpoint (docs/feedback.md), in calls the site accepts.

What the demo and the ``modelfleet site feedback`` command share: ``labels`` of any length
go out in calls of at most :data:`~modelfleet.site.feedback.MAX_LABELS`, and the answers
are summed. A refusal is a :class:`~modelfleet.errors.SiteError` with the site's reason.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import httpx

from modelfleet.errors import SiteError
from modelfleet.site.feedback import DROP_REASONS, MAX_LABELS

__all__ = ["FeedbackTotals", "send_labels"]


@dataclass
class FeedbackTotals:
    """What the site said about every label sent: accepted, and dropped by reason."""

    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "dropped": dict(self.dropped)}


def send_labels(
    site_url: str,
    model: str,
    labels: Iterable[tuple[str, str | int | float]],
    *,
    token: str | None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 60.0,
) -> FeedbackTotals:
    """POST ``(request id, label)`` pairs to ``site_url`` for ``model``; the summed answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{site_url.rstrip('/')}/v2/models/{model}/feedback"
    totals = FeedbackTotals()
    pending = iter(labels)
    with httpx.Client(timeout=timeout, verify=verify, headers=headers) as http:
        while chunk := list(islice(pending, MAX_LABELS)):
            body = {"labels": [{"id": rid, "label": label} for rid, label in chunk]}
            try:
                response = http.post(url, json=body)
            except httpx.HTTPError as exc:
                raise SiteError(f"cannot reach the site {site_url}: {exc}") from exc
            if response.status_code != 200:
                try:
                    reason = response.json().get("error", response.text)
                except ValueError:
                    reason = response.text
                raise SiteError(f"the site refused the labels ({response.status_code}): {reason}")
            answer = response.json()
            totals.accepted += int(answer["accepted"])
            for reason, n in answer["dropped"].items():
                totals.dropped[reason] = totals.dropped.get(reason, 0) + int(n)
    return totals
