"""The two rules that put a skewed site on the hub's clock, without processes (issue #20,
item 4): :func:`modelfleet.hub.telemetry.rebase` (telemetry windows, by the batch's
``sent_at``) and :func:`modelfleet.grants.clock_offset` (token expiry at a site, by the grant
list's signed ``issued_at``). ``test_clock_skew.py`` runs both end to end under libfaketime.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import Unauthenticated
from modelfleet.grants import Grant, GrantList, clock_offset, hash_secret, sign_grants
from modelfleet.hub.telemetry import CLOCK_SKEW_TOLERANCE_S, rebase
from modelfleet.registry.keyset import KeySet
from tests.conftest import InProcessHub
from tests.monitoring.test_api_telemetry import enrolled_site

#: The hub's clock when the batch (or the grant list) arrives.
RECEIVED = 1_796_000_000.0
HUB_NOW = datetime.fromtimestamp(RECEIVED, UTC)


def windows(*spans: tuple[float, float]) -> list[dict[str, Any]]:
    return [{"id": f"w{i}", "start": s, "end": e} for i, (s, e) in enumerate(spans)]


def spans(docs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(w["start"], w["end"]) for w in docs]


# --- rebase: telemetry windows onto the hub's clock -------------------------------------


@pytest.mark.parametrize("site_off_s", [300.0, -300.0, 86_400.0, -86_400.0])
def test_windows_of_a_site_ahead_or_behind_land_on_the_hubs_clock(site_off_s: float) -> None:
    """Two windows that closed 11 s and 1 s before the batch left, by the site's clock,
    closed 11 s and 1 s before the hub received it, by the hub's."""
    site_now = RECEIVED + site_off_s
    docs = windows((site_now - 20, site_now - 11), (site_now - 10, site_now - 1))
    skew = rebase(docs, site_now, RECEIVED)
    assert skew == -site_off_s
    assert spans(docs) == [(RECEIVED - 20, RECEIVED - 11), (RECEIVED - 10, RECEIVED - 1)]


@pytest.mark.parametrize("site_off_s", [CLOCK_SKEW_TOLERANCE_S, -CLOCK_SKEW_TOLERANCE_S, 0.4])
def test_a_skew_within_the_tolerance_leaves_the_windows_on_the_shared_grid(
    site_off_s: float,
) -> None:
    """A site on NTP (transit time included) keeps its windows where they are: aligned on
    the same wall-clock multiples as every other site's."""
    docs = windows((RECEIVED - 20, RECEIVED - 10), (RECEIVED - 10, RECEIVED))
    assert rebase(docs, RECEIVED + site_off_s, RECEIVED) == 0.0
    assert spans(docs) == [(RECEIVED - 20, RECEIVED - 10), (RECEIVED - 10, RECEIVED)]


def test_without_sent_at_only_a_window_from_the_future_moves_back_its_length_kept() -> None:
    """An old site sends no ``sent_at``: windows are taken as they are, except that none
    may end after the hub received it (a site ahead), which ends at the receive time."""
    docs = windows((RECEIVED - 400, RECEIVED - 390), (RECEIVED + 290, RECEIVED + 300))
    assert rebase(docs, None, RECEIVED) == 0.0
    assert spans(docs) == [(RECEIVED - 400, RECEIVED - 390), (RECEIVED - 10, RECEIVED)]


@pytest.mark.parametrize("sent_at", [math.nan, math.inf, -math.inf])
def test_a_sent_at_that_is_no_number_counts_as_missing(sent_at: float) -> None:
    docs = windows((RECEIVED - 10, RECEIVED - 5), (RECEIVED + 50, RECEIVED + 60))
    assert rebase(docs, sent_at, RECEIVED) == 0.0
    assert spans(docs) == [(RECEIVED - 10, RECEIVED - 5), (RECEIVED - 10, RECEIVED)]


def test_a_site_clock_at_the_epoch_or_millennia_ahead_still_lands_on_the_hubs_clock() -> None:
    """A dead RTC (1970) or a garbled clock (year 5138, the API's upper bound) is a skew like
    any other: the windows are where they belong on the hub's clock."""
    dead = windows((0.0, 9.0))
    assert rebase(dead, 10.0, RECEIVED) == RECEIVED - 10.0
    assert spans(dead) == [(RECEIVED - 10, RECEIVED - 1)]
    far = 1e11 - 1
    garbled = windows((far - 10, far - 1))
    rebase(garbled, far, RECEIVED)
    assert spans(garbled) == [(RECEIVED - 10, RECEIVED - 1)]


def test_whatever_the_inputs_windows_end_up_between_the_epoch_and_the_receive_time() -> None:
    """Bounded for any finite times, even ones that disagree with ``sent_at`` (a window
    "closed" after the batch left, a clock that jumped): finite, start <= end, never before
    the epoch, never ending after the hub received them (beyond the tolerance)."""
    rng = random.Random(20)
    for _ in range(2000):
        a, b = sorted(rng.uniform(0, 1e11) for _ in range(2))
        sent_at = rng.choice([None, rng.uniform(0, 1e11), a + rng.uniform(-1e4, 1e4)])
        docs = windows((a, b))
        rebase(docs, sent_at, RECEIVED)
        start, end = spans(docs)[0]
        assert math.isfinite(start), (a, b, sent_at)
        assert math.isfinite(end), (a, b, sent_at)
        assert 0.0 <= start <= end <= RECEIVED + CLOCK_SKEW_TOLERANCE_S, (a, b, sent_at)


def site_batch(site_now: float, **extra: object) -> dict[str, Any]:
    """One window of 3 requests that closed a second before the batch left, by the site's
    clock (``site_now``)."""
    window = {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": site_now - 11,
        "end": site_now - 1, "requests": 3, "latency": {"4": 3}, "inputs": {}, "outputs": {},
    }  # fmt: skip
    return {"batch_id": uuid.uuid4().hex, "spool_id": "s", "windows": [window], **extra}


def test_the_hub_api_rebases_by_sent_at_warns_once_and_refuses_absurd_times(
    hub_factory: Callable[..., InProcessHub], caplog: pytest.LogCaptureFixture
) -> None:
    """Through the ingest API of an in-process hub: a site five minutes ahead is told the
    correction (``clock_skew_s``) and its windows are stored on the hub's clock; the hub
    warns once for the episode (not once per batch) and says when the clock is back;
    ``sent_at`` that is no epoch time is a 400 and stores nothing."""
    hub = hub_factory()
    token = enrolled_site(hub, "plant-ahead")
    url = "/api/v1/sites/plant-ahead/telemetry"
    caplog.set_level(logging.INFO, logger="modelfleet.hub.telemetry")
    for _ in range(3):
        site_now = time.time() + 300
        body = site_batch(site_now, sent_at=site_now)
        answer = hub.client.post(url, json=body, headers=hub.headers(token))
        assert answer.status_code == 200, answer.text
        assert abs(answer.json()["clock_skew_s"] + 300) < 30, answer.json()
    status = hub.client.get("/api/v1/telemetry/status", headers=hub.headers()).json()
    (row,) = [m for s in status["sites"] if s["site"] == "plant-ahead" for m in s["models"]]
    assert row["requests_total"] == 9
    end = datetime.fromisoformat(row["last_window_end"])
    assert abs((datetime.now(UTC) - end).total_seconds()) < 30, row  # not 5 minutes ahead
    fixed = site_batch(time.time(), sent_at=time.time())
    assert hub.client.post(url, json=fixed, headers=hub.headers(token)).json()["clock_skew_s"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == "modelfleet.hub.telemetry"]
    assert said == [
        "site plant-ahead: clock 300s off the hub's; windows rebased",
        "site plant-ahead: clock back within 60s of the hub's",
    ]
    for absurd in ("1e12", "-1", "NaN", "Infinity", "-Infinity", '"soon"'):
        raw = json.dumps(site_batch(time.time()))[:-1] + f', "sent_at": {absurd}}}'
        refused = hub.client.post(
            url, content=raw, headers={**hub.headers(token), "Content-Type": "application/json"}
        )
        assert refused.status_code == 400, (absurd, refused.text)
    status = hub.client.get("/api/v1/telemetry/status", headers=hub.headers()).json()
    assert [s["requests_total"] for s in status["sites"] if s["site"] == "plant-ahead"] == [12]


# --- clock_offset: token expiry at a site, on the hub's clock ----------------------------

HUB = Ed25519PrivateKey.generate()
KEYS = KeySet.of(HUB)
#: Expires four minutes after the hub served the list (by the hub's clock).
SHORT = Grant("t-short", "short", hash_secret("short"), expires_at=HUB_NOW + timedelta(minutes=4))


def arrived(received_at: datetime | None) -> GrantList:
    """The list the hub signed at ``HUB_NOW``, as a site verifies it on arrival."""
    text, sig = sign_grants("plant-a", [SHORT], HUB, issued_at=HUB_NOW)
    return GrantList.verify(
        text, sig, KEYS, holder="plant-a", newer_than=HUB_NOW, received_at=received_at
    )


@pytest.mark.parametrize("site_off", [timedelta(minutes=5), timedelta(minutes=-5)])
def test_the_offset_is_the_hubs_clock_minus_the_sites(site_off: timedelta) -> None:
    assert clock_offset(HUB_NOW, HUB_NOW + site_off) == -site_off
    assert arrived(HUB_NOW + site_off).clock_offset == -site_off


@pytest.mark.parametrize("site_off", [timedelta(minutes=5), timedelta(minutes=-5)])
def test_a_skewed_site_judges_expiry_on_the_hubs_clock(site_off: timedelta) -> None:
    """Three minutes after the list came (hub time +3 min) the token works, five minutes
    after (+5 min) it has expired: at a site ahead, whose clock already said +8 min at the
    first check, and at a site behind, whose clock still said 0 at the second."""
    grants = arrived(HUB_NOW + site_off)
    site_clock = HUB_NOW + site_off
    assert grants.authorize("Bearer short", "m", site_clock + timedelta(minutes=3)).name == "short"
    with pytest.raises(Unauthenticated, match="expired"):
        grants.authorize("Bearer short", "m", site_clock + timedelta(minutes=5))


@pytest.mark.parametrize("site_off_s", [2.0, -2.0, 0.5])
def test_an_offset_within_the_tolerance_is_none(site_off_s: float) -> None:
    """A site on NTP uses its own clock (the estimate includes the list's transit time)."""
    site_clock = HUB_NOW + timedelta(seconds=site_off_s)
    assert clock_offset(HUB_NOW, site_clock) == timedelta(0)
    assert arrived(site_clock).clock_offset == timedelta(0)


def test_a_list_read_back_from_disk_has_no_offset() -> None:
    """No arrival time (the list held at start): the site's own clock until a fresh list."""
    grants = arrived(None)
    assert grants.clock_offset == timedelta(0)
    with pytest.raises(Unauthenticated, match="expired"):
        grants.authorize("Bearer short", "m", HUB_NOW + timedelta(minutes=4))


@pytest.mark.parametrize(
    "site_clock",
    [datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)],
    ids=["dead-rtc-1970", "year-2100"],
)
def test_a_site_decades_off_still_judges_expiry_on_the_hubs_clock(site_clock: datetime) -> None:
    """Not bounded on purpose: the offset is measured against a time the hub signed, so even
    a clock decades off is corrected exactly (a bound would leave such a site judging on
    its own wrong clock: accepting expired tokens forever, or refusing every one)."""
    grants = arrived(site_clock)
    assert grants.clock_offset == HUB_NOW - site_clock
    assert grants.authorize("Bearer short", "m", site_clock + timedelta(minutes=3)).name == "short"
    with pytest.raises(Unauthenticated, match="expired"):
        grants.authorize("Bearer short", "m", site_clock + timedelta(minutes=5))
