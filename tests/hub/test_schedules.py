"""Schedules through the service's public methods with an injected clock, on SQLite and
PostgreSQL: slots in the schedule's zone (a DST change both ways), once per slot with two
services on two store connections at once, the misfire rule after a "restart" (a new
service instance), a fire left ``firing`` by a dead process, and a federated action that
starts its job once. Hooks go to a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from modelfleet.api.schedules import ScheduleIn
from modelfleet.hub.actions import Actions
from modelfleet.hub.events import Events
from modelfleet.hub.schedules import Schedules
from modelfleet.hub.store import Store, open_store
from tests.conftest import InProcessHub
from tests.federation.conftest import fl_hub
from tests.webhook_receiver import Receiver, receiver

BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "a-schedule-secret-long-enough"


class Clock:
    """The injected clock: a test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def hub(hub_factory: Callable[..., InProcessHub], db: str | None) -> InProcessHub:
    # The hub's own loop runs on the system clock, years before the test's instants: it
    # finds nothing due in them. A long interval keeps it quiet anyway.
    return hub_factory(db=db, schedule_interval_s=60.0)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver(200) as rec:
        yield rec


def service(hub: InProcessHub, clock: Clock, store: Store | None = None) -> Schedules:
    """A schedules service like the hub's (``store``: another connection pool, as another
    replica has), on the test's clock."""
    st = store or hub.ctx.store
    events = Events(st) if store else hub.ctx.events
    return Schedules(st.schedules, events, Actions(hub.ctx.federation, hub.ctx.registry), now=clock)


def weekly_hook(url: str, **extra: object) -> ScheduleIn:
    return ScheduleIn.model_validate(
        {
            "cron": "0 3 * * MON",
            "timezone": "Europe/Berlin",
            "action": {"kind": "hook", "url": url + "/hook", "secret": SECRET},
            **extra,
        }
    )


def signed(request: dict) -> bool:
    ts = request["headers"]["x-modelfleet-timestamp"]
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + request["body"], hashlib.sha256)
    return hmac.compare_digest(
        request["headers"]["x-modelfleet-signature"], "sha256=" + mac.hexdigest()
    )


def events_of(hub: InProcessHub, type: str) -> list:
    return list(hub.ctx.events.repo.list_events(types=[type], limit=1000))


def test_weekly_slot_fires_once_across_two_replicas_and_misses_by_the_rule(
    hub: InProcessHub, hook: Receiver, db: str | None
) -> None:
    clock = Clock(berlin(2031, 1, 5, 12, 0))  # a Sunday
    a = service(hub, clock)
    saved = a.save("weekly", weekly_hook(hook.url), "tester")
    assert saved.next_slot == berlin(2031, 1, 6, 3, 0)
    assert saved.next_slot.utcoffset() == timedelta(hours=1)
    assert "secret" not in saved.action
    assert saved.secret is None
    a.run_pass()
    assert hook.got == []

    # Monday 03:00:02: two replicas (two stores on the database) judge at the same moment.
    other = open_store(db or hub.ctx.store.url.replace("***", ""))
    try:
        b = service(hub, clock, other)
        clock.at = berlin(2031, 1, 6, 3, 0, 2)
        start = threading.Barrier(2)

        def judge(s: Schedules) -> None:
            start.wait()
            s.run_pass()

        threads = [threading.Thread(target=judge, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        a.run_pass()
        b.run_pass()
    finally:
        other.close()
    assert len(hook.got) == 1
    request = hook.got[0]
    assert signed(request)
    body = json.loads(request["body"])
    assert body["name"] == "weekly"
    assert body["slot"] == "2031-01-06T02:00:00+00:00"
    assert request["headers"]["x-modelfleet-fire-id"] == "schedule/weekly/2031-01-06T02:00:00+00:00"
    fires = a.fires("weekly")
    assert [(f.state, f.slot, f.job) for f in fires] == [
        ("fired", datetime(2031, 1, 6, 2, 0, tzinfo=UTC), "HTTP 200")
    ]
    fired = events_of(hub, "schedule.fired")
    assert len(fired) == 1
    assert fired[0].payload["result"]["state"] == "fired"
    assert fired[0].payload == {
        "schedule": "weekly",
        "slot": "2031-01-06T02:00:00+00:00",
        "action": "hook",
        "result": {
            "state": "fired",
            "job": "HTTP 200",
            "detail": fired[0].payload["result"]["detail"],
        },
    }

    # The hub "restarts" (a new instance) on Monday 2 June, summer time: the Mondays in
    # between are missed (one event each), the latest slot is within the grace and fires,
    # at 01:00 UTC now (CEST).
    clock.at = berlin(2031, 6, 2, 3, 4)
    restarted = service(hub, clock)
    restarted.run_pass()
    restarted.run_pass()
    assert len(hook.got) == 2
    assert json.loads(hook.got[1]["body"])["slot"] == "2031-06-02T01:00:00+00:00"
    fires = restarted.fires("weekly", limit=1000)
    states = [f.state for f in fires]
    assert states[0] == "fired"
    assert states[-1] == "fired"
    missed = [f for f in fires if f.state == "missed"]
    assert len(missed) == 20  # 13 Jan .. 26 May
    assert missed[0].slot == datetime(2031, 5, 26, 1, 0, tzinfo=UTC)
    assert missed[-1].slot == datetime(2031, 1, 13, 2, 0, tzinfo=UTC)  # CET then
    assert len(events_of(hub, "schedule.missed")) == 20
    listed = restarted.list_schedules()[0]
    assert listed.last_fire is not None
    assert listed.last_fire.state == "fired"
    assert listed.next_slot == berlin(2031, 6, 9, 3, 0)


def test_a_slot_judged_beyond_its_grace_is_missed_not_fired(
    hub: InProcessHub, hook: Receiver
) -> None:
    clock = Clock(berlin(2031, 1, 5, 12, 0))
    s = service(hub, clock)
    s.save("weekly", weekly_hook(hook.url, misfire_grace_s=60), "tester")
    clock.at = berlin(2031, 1, 6, 3, 10)  # ten minutes late: the hub was down
    service(hub, clock).run_pass()
    assert hook.got == []
    (fire,) = s.fires("weekly")
    assert fire.state == "missed"
    assert "beyond misfire_grace_s 60" in fire.reason
    (event,) = events_of(hub, "schedule.missed")
    assert event.payload["slot"] == "2031-01-06T02:00:00+00:00"
    assert event.key == "schedule/weekly/2031-01-06T02:00:00+00:00/missed"
    service(hub, clock).run_pass()
    assert len(s.fires("weekly")) == 1  # judged once


def test_daily_slot_across_both_dst_changes(hub: InProcessHub, hook: Receiver) -> None:
    """02:30 does not exist on 30 March 2031 in Berlin (it fires at 03:00 CEST) and happens
    twice on 26 October (it fires once)."""

    def nightly(enabled: bool = True) -> ScheduleIn:
        action = {"kind": "hook", "url": hook.url + "/hook", "secret": SECRET}
        return ScheduleIn.model_validate(
            {
                "cron": "30 2 * * *",
                "timezone": "Europe/Berlin",
                "action": action,
                "enabled": enabled,
            }
        )

    clock = Clock(datetime(2031, 3, 28, 23, tzinfo=UTC))
    s = service(hub, clock)
    for start in (datetime(2031, 3, 28, 23, tzinfo=UTC), datetime(2031, 10, 24, 23, tzinfo=UTC)):
        clock.at = start
        s.save("nightly", nightly(enabled=False), "tester")  # switched off over the summer,
        s.save("nightly", nightly(), "tester")  # and on again: slots judged from now on
        for _ in range(4 * 24 * 4):  # four days, a pass every 15 minutes
            clock.at += timedelta(minutes=15)
            s.run_pass()
    seen = [json.loads(r["body"])["slot"] for r in hook.got]
    assert seen == [
        "2031-03-29T01:30:00+00:00",  # CET
        "2031-03-30T01:00:00+00:00",  # 02:30 skipped: 03:00 CEST
        "2031-03-31T00:30:00+00:00",  # CEST
        "2031-04-01T00:30:00+00:00",
        "2031-10-25T00:30:00+00:00",  # CEST
        "2031-10-26T00:30:00+00:00",  # the first 02:30 only
        "2031-10-27T01:30:00+00:00",  # CET
        "2031-10-28T01:30:00+00:00",
    ]
    assert all(f.state == "fired" for f in s.fires("nightly"))


def test_a_fire_left_firing_by_a_dead_process_is_not_sent_again(
    hub: InProcessHub, hook: Receiver
) -> None:
    clock = Clock(berlin(2031, 1, 5, 12, 0))
    s = service(hub, clock)
    s.save("weekly", weekly_hook(hook.url), "tester")
    slot = datetime(2031, 1, 6, 2, 0, tzinfo=UTC)
    # A hub claimed the slot and was SIGKILLed before the hook answered.
    claimed = hub.ctx.store.schedules.claim_slot(
        "schedule", "weekly", slot, state="firing", action="hook", owner="dead", at=slot
    )
    assert claimed is not None
    clock.at = slot + timedelta(seconds=30)
    restarted = service(hub, clock)
    restarted.run_pass()
    assert hook.got == []  # the slot is claimed: not fired again
    assert restarted.fires("weekly")[0].state == "firing"  # the dead one may still answer
    clock.at = slot + timedelta(minutes=5)
    restarted.run_pass()
    (fire,) = restarted.fires("weekly")
    assert fire.state == "interrupted"
    assert "not run again" in fire.detail
    assert hook.got == []


def test_a_federated_schedule_starts_its_job_once_even_when_resumed(
    hub_factory: Callable[..., InProcessHub], tmp_path
) -> None:
    fl, _, _ = fl_hub(hub_factory, tmp_path, {"a": {"participate": True, "datasets": ["iris"]}})
    clock = Clock(berlin(2031, 1, 5, 12, 0))
    s = Schedules(
        fl.ctx.store.schedules,
        fl.ctx.events,
        Actions(fl.ctx.federation, fl.ctx.registry),
        now=clock,
    )
    job = {"model": "iris", "data": "iris", "rounds": 1, "round_timeout_s": 60}
    s.save("weekly", ScheduleIn.model_validate(
        {"cron": "0 3 * * MON", "timezone": "Europe/Berlin",
         "action": {"kind": "federated", "job": job}}), "tester")  # fmt: skip
    clock.at = berlin(2031, 1, 6, 3, 0, 1)
    s.run_pass()
    (fire,) = s.fires("weekly")
    assert fire.state == "fired", fire.detail
    assert fire.job == "s-weekly-20310106T020000Z"
    started = fl.ctx.federation.job(fire.job)
    assert started.created_by == "schedule:weekly"
    # A second slot's fire claimed by a process that died: resumed, and the coordinator's
    # idempotent id means one job for it whatever ran before.
    slot = datetime(2031, 1, 13, 2, 0, tzinfo=UTC)
    fl.ctx.store.schedules.claim_slot(
        "schedule", "weekly", slot, state="firing", action="federated", owner="dead", at=slot
    )
    clock.at = slot + timedelta(minutes=5)
    s.run_pass()
    latest = s.fires("weekly")[0]
    assert (latest.state, latest.job) == ("fired", "s-weekly-20310113T020000Z")
    jobs = [j.id for j in fl.ctx.federation.jobs()]
    assert jobs.count("s-weekly-20310113T020000Z") == 1
    assert len(jobs) == 2
