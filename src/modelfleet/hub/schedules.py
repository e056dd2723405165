"""Schedules: a cron expression in an explicit time zone starts an action at each slot.

**Once per slot.** Each pass (every ``MODELFLEET_HUB_SCHEDULE_INTERVAL_S``, on the replica
holding the ``schedules`` lease) computes, per enabled schedule, the slots after its
``cursor`` up to now, in the schedule's zone (croniter). A slot is claimed by inserting its
fire row, unique by (schedule, slot), *before* the action runs; only the writer whose row
went in acts, then records the outcome (the job id or the error) on the row. The cursor
then moves past the slots by compare-and-set. So two replicas for a moment, or a hub
restarted mid-pass, act on a slot once.

**Misfires (the documented rule).** Of the slots due at a pass, only the latest may fire,
and only if the pass is at most ``misfire_grace_s`` after it; every older slot, and the
latest when it is later than that, is recorded ``missed`` with a ``schedule.missed``
event. In normal running a pass sees one slot a few seconds late: it fires. After the hub
was down, the slot that fell in the outage fires on restart if the restart came within
the grace, else it is missed; a slot is never fired twice. At most :data:`MAX_JUDGED` slots
are recorded one by one per pass; earlier ones (a minutely schedule down for a month) are
named in the oldest row's reason, not listed.

**A hub that died mid-action.** A fire left ``firing`` by another process for
:data:`STALE_S` is resumed: a rerunnable action (``federated``, whose job id is derived
from the slot) is run again and finds or starts the one job; a hook is recorded
``interrupted`` and not sent again (at most once).

**Time.** The service reads the time from an injected clock (``now``); the hub's is the
system clock, or — test mode only, off by default — the instant written in the file named
by ``MODELFLEET_HUB_TEST_CLOCK_FILE``, read at each pass, so a test with real processes
can make "next Monday 03:00 Europe/Berlin" arrive at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from modelfleet.api.schedules import Fire, Schedule, ScheduleIn, ScheduleSaved
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.hub.actions import INTERRUPTED, Actions, Firing, Outcome
from modelfleet.hub.events import Events
from modelfleet.hub.store.records.schedules import FireRecord, ScheduleRecord
from modelfleet.hub.store.repos.schedules import ScheduleRepo
from modelfleet.loops import BackgroundLoop
from modelfleet.refs import check_name

if TYPE_CHECKING:
    from modelfleet.hub.store import Store
    from modelfleet.hub.triggers import Triggers

log = logging.getLogger("modelfleet.hub.schedules")

Clock = Callable[[], datetime]
#: Slots recorded one by one in one pass of one schedule.
MAX_JUDGED = 100
#: A fire still ``firing`` this long after another process claimed it: that one died.
STALE_S = 120.0
MAX_SCHEDULES = 500
_MACROS = "@yearly, @monthly, @weekly, @daily, @hourly"


def utc_now() -> datetime:
    return datetime.now(UTC)


class FileClock:
    """Test mode: the instant written in ``path`` (ISO 8601 with an offset), read at every
    call; the system clock while the file is missing or unreadable (logged once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def __call__(self) -> datetime:
        try:
            text = self.path.read_text().strip()
            value = datetime.fromisoformat(text)
            if value.tzinfo is None:
                raise ValueError("no UTC offset")
            return value.astimezone(UTC)
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("test clock %s unusable (%s): using the system clock", self.path, exc)
            return utc_now()


def hub_clock(test_clock_file: Path | None) -> Clock:
    """The system clock; a :class:`FileClock` only when the test setting names a file."""
    if test_clock_file is None:
        return utc_now
    log.warning("TEST MODE: schedules read the time from %s", test_clock_file)
    return FileClock(test_clock_file)


def process_owner() -> str:
    """Names this process on the fire rows it claims (host, pid and a random part)."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"


# --- cron and time zones ---------------------------------------------------------------


def check_cron(expr: str) -> str:
    """A five-field cron expression, normalised; InvalidInput naming the fault."""
    text = " ".join(expr.split())
    fields = text.split(" ") if text else []
    if text.startswith("@"):
        raise InvalidInput(
            f"cron expression {expr!r}: macros ({_MACROS}) are not accepted; write the five "
            "fields, e.g. '0 3 * * MON'"
        )
    if len(fields) != 5:
        raise InvalidInput(
            f"cron expression {expr!r} has {len(fields)} fields; it needs five: minute hour "
            "day-of-month month day-of-week (e.g. '0 3 * * MON')"
        )
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors
        raise InvalidInput(f"cron expression {expr!r} does not parse: {exc}") from exc
    return text


def check_timezone(name: str) -> ZoneInfo:
    """An IANA zone (``Europe/Berlin``, ``UTC``); InvalidInput otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin, "
            "America/New_York or UTC"
        ) from exc


def _repeated(cron: str, slot: datetime, tz: ZoneInfo) -> bool:
    """A fixed-hour slot in the hour a DST change repeats (autumn), second time round:
    skipped, so ``30 2 * * *`` runs once that night as with Vixie cron; a schedule whose
    hour field has a ``*`` runs in both hours, as its interval says."""
    return "*" not in cron.split(" ")[1] and slot.astimezone(tz).fold == 1


def due_slots(
    cron: str, tz: ZoneInfo, after: datetime, until: datetime, limit: int = MAX_JUDGED
) -> tuple[list[datetime], bool]:
    """The slots in ``(after, until]`` in ``tz``, oldest first, as UTC; at most the newest
    ``limit``, and whether earlier ones were left out. A wall-clock time a DST change skips
    (spring) falls on the first minute after the gap (``30 2 * * *`` at 03:00 that day)."""
    it = croniter(cron, (until + timedelta(seconds=1)).astimezone(tz))
    found: list[datetime] = []
    previous = until + timedelta(seconds=1)
    while True:
        slot = it.get_prev(datetime).astimezone(UTC)
        if slot >= previous:  # never walk forwards (croniter < 7 did, around DST changes)
            it = croniter(cron, (previous - timedelta(seconds=1)).astimezone(tz))
            previous -= timedelta(seconds=1)
            continue
        previous = slot
        if slot <= after:
            return list(reversed(found)), False
        if slot > until or _repeated(cron, slot, tz):
            continue
        if len(found) == limit:
            return list(reversed(found)), True
        found.append(slot)


def next_slot(cron: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first slot after ``after``, in the schedule's zone."""
    it = croniter(cron, after.astimezone(tz))
    while True:
        slot: datetime = it.get_next(datetime)
        if not _repeated(cron, slot, tz):
            return slot.astimezone(tz)


def fire_view(f: FireRecord) -> Fire:
    return Fire(
        id=f.id,
        kind=f.kind,
        name=f.name,
        slot=f.slot,
        state=f.state,
        action=f.action,
        job=f.job,
        detail=f.detail,
        reason=f.reason,
        claimed_at=f.claimed_at,
        finished_at=f.finished_at,
    )


class Schedules:
    """Schedules (save, list, remove, their fires) and the pass that fires them."""

    def __init__(
        self,
        repo: ScheduleRepo,
        events: Events,
        actions: Actions,
        *,
        now: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        self.repo = repo
        self.events = events
        self.actions = actions
        self.now = now
        self.owner = owner or process_owner()

    # --- schedules -----------------------------------------------------------------

    def save(self, name: str, body: ScheduleIn, actor: str) -> ScheduleSaved:
        """Create or replace the schedule ``name``. A new schedule, or one whose cron,
        zone or enabling changed, judges slots from now on (none before)."""
        check_name(name, "schedule name")
        cron = check_cron(body.cron)
        check_timezone(body.timezone)
        existing = self.repo.list_schedules()
        previous = next((s for s in existing if s.name == name), None)
        if previous is None and len(existing) >= MAX_SCHEDULES:
            raise InvalidInput(f"at most {MAX_SCHEDULES} schedules; remove one first")
        action, made = self.actions.check(body.action, previous.action if previous else None)
        now = self.now()
        cursor = now
        if (
            previous is not None
            and previous.cron == cron
            and previous.timezone == body.timezone
            and previous.enabled == body.enabled
        ):
            cursor = previous.cursor
        record = self.repo.save_schedule(
            ScheduleRecord(
                name=name,
                cron=cron,
                timezone=body.timezone,
                action=action,
                enabled=body.enabled,
                misfire_grace_s=body.misfire_grace_s,
                description=body.description,
                cursor=cursor,
                created_by=previous.created_by if previous else actor,
                created_at=previous.created_at if previous else now,
                updated_at=now,
            )
        )
        return ScheduleSaved(**self._view(record, None).model_dump(), secret=made)

    def get(self, name: str) -> Schedule:
        record = self.repo.get_schedule(check_name(name, "schedule name"))
        fires = self.repo.list_fires("schedule", name, limit=1)
        return self._view(record, fires[0] if fires else None)

    def list_schedules(self) -> list[Schedule]:
        latest = self.repo.latest_fires("schedule")
        return [self._view(s, latest.get(s.name)) for s in self.repo.list_schedules()]

    def remove(self, name: str) -> None:
        self.repo.delete_schedule(check_name(name, "schedule name"))

    def fires(self, name: str, limit: int = 100) -> list[Fire]:
        self.repo.get_schedule(check_name(name, "schedule name"))  # NotFound if unknown
        return [fire_view(f) for f in self.repo.list_fires("schedule", name, limit=limit)]

    def _view(self, s: ScheduleRecord, last: FireRecord | None) -> Schedule:
        tz = check_timezone(s.timezone)
        upcoming = next_slot(s.cron, tz, max(s.cursor, self.now())) if s.enabled else None
        return Schedule(
            name=s.name,
            cron=s.cron,
            timezone=s.timezone,
            action=self.actions.build(s.action).public(),
            enabled=s.enabled,
            misfire_grace_s=s.misfire_grace_s,
            description=s.description,
            next_slot=upcoming,
            last_fire=fire_view(last) if last else None,
            created_by=s.created_by,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )

    # --- the pass ------------------------------------------------------------------

    def run_pass(self) -> None:
        """Judge every enabled schedule's due slots once (the loop calls this; so may a
        test, with its own clock). One schedule's failure does not stop the others."""
        now = self.now()
        self._recover(now)
        for schedule in self.repo.list_schedules():
            if not schedule.enabled:
                continue
            try:
                self._judge(schedule, now)
            except ModelfleetError as exc:
                log.warning("schedule %s not judged: %s", schedule.name, exc.message)

    def _judge(self, s: ScheduleRecord, now: datetime) -> None:
        slots, more = due_slots(s.cron, check_timezone(s.timezone), s.cursor, now)
        if not slots:
            return
        kind = str(s.action.get("kind"))
        latest = slots[-1]
        late = (now - latest).total_seconds()
        for index, slot in enumerate(slots[:-1]):
            reason = f"a later slot ({latest.isoformat()}) was due at the same pass"
            if index == 0 and more:
                reason += f"; earlier slots since {s.cursor.isoformat()} are not listed"
            self._miss(s, slot, kind, reason, now)
        if late <= s.misfire_grace_s:
            fire = self.repo.claim_slot(
                "schedule", s.name, latest, state="firing", action=kind, owner=self.owner, at=now
            )
            if fire is not None:
                self._act(s, fire, now)
        else:
            reason = (
                f"judged {late:.0f} s after the slot, beyond misfire_grace_s {s.misfire_grace_s:g}"
            )
            if len(slots) == 1 and more:
                reason += f"; earlier slots since {s.cursor.isoformat()} are not listed"
            self._miss(s, latest, kind, reason, now)
        self.repo.advance_cursor(s.name, s.cursor, latest)

    def _miss(
        self, s: ScheduleRecord, slot: datetime, kind: str, reason: str, now: datetime
    ) -> None:
        fire = self.repo.claim_slot(
            "schedule", s.name, slot, state="missed", action=kind, owner=self.owner, at=now,
            reason=reason,
        )  # fmt: skip
        if fire is None:
            return  # judged before (another replica, or this one before a restart)
        log.warning("schedule %s missed its slot %s: %s", s.name, slot.isoformat(), reason)
        self.events.emit(
            "schedule.missed",
            s.name,
            {"schedule": s.name, "slot": slot.isoformat(), "action": kind, "reason": reason},
            key=f"schedule/{s.name}/{slot.isoformat()}/missed",
        )

    def _act(self, s: ScheduleRecord, fire: FireRecord, now: datetime) -> None:
        firing = Firing("schedule", s.name, fire.slot, fire.id, fire.reason)
        self._finish(s.name, fire, self.actions.run(s.action, firing), self.now())

    def _finish(
        self, name: str, fire: FireRecord, outcome: Outcome, at: datetime, state: str = ""
    ) -> None:
        state = state or ("fired" if outcome.ok else "failed")
        try:
            done = self.repo.finish_fire(
                fire.id, state=state, job=outcome.job, detail=outcome.detail, at=at
            )
        except ModelfleetError as exc:  # the schedule was removed meanwhile
            log.info("schedule %s: outcome not recorded: %s", name, exc.message)
            return
        log.info("schedule %s fired for %s: %s", name, fire.slot.isoformat(), outcome.detail)
        self.events.emit(
            "schedule.fired",
            name,
            {
                "schedule": name,
                "slot": fire.slot.isoformat(),
                "action": fire.action,
                "result": {"state": done.state, "job": done.job, "detail": done.detail},
            },
            key=f"schedule/{name}/{fire.slot.isoformat()}/fired",
        )

    def _recover(self, now: datetime) -> None:
        stale = self.repo.stale_fires(
            claimed_before=now - timedelta(seconds=STALE_S), not_owner=self.owner
        )
        for fire in (f for f in stale if f.kind == "schedule"):
            try:
                s = self.repo.get_schedule(fire.name)
            except ModelfleetError:
                continue
            if self.actions.build(s.action).rerunnable:
                log.warning("schedule %s: resuming the fire of %s", s.name, fire.slot)
                self._act(s, fire, now)
            else:
                self._finish(s.name, fire, INTERRUPTED, now, state="interrupted")


class Automation:
    """The background loop of schedules and triggers: the replica holding the
    ``schedules`` lease (always, on SQLite) runs a pass of each every ``interval_s``."""

    def __init__(
        self, store: Store, schedules: Schedules, triggers: Triggers, *, interval_s: float
    ) -> None:
        self.schedules = schedules
        self.triggers = triggers
        self.lease = store.leadership("schedules")
        self._loop = BackgroundLoop(
            "schedules",
            self._step,
            interval_s=interval_s,
            logger=log,
            failure_message="schedule pass failed",
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.lease.release()

    def _step(self) -> None:
        if not self.lease.poll():
            return
        self.schedules.run_pass()
        self.triggers.run_pass()
