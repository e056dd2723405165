"""The rollouts pages: the list, one rollout's waves and gates, and its live stream
(JSON twins: ``/api/v1/rollouts`` and ``/api/v1/rollouts/{id}``).

A rollout's page shows the waves as a timeline, every gate's figure next to its limit now
(the controller's own ``progress``) and over time (the new and the previous version's
telemetry on the current wave's sites since the rollout started, from
:class:`~modelfleet.hub.timeseries.TimeSeries`), the verdict and its reason, and the
actions valid in the current state for a role that may act. The live part moves by
server-sent events (:func:`rollout_stream`); the actions post to the API, which checks the
role and audits them as it does for the CLI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from modelfleet.hub.context import HubContext
from modelfleet.hub.dashboard import session
from modelfleet.hub.dashboard.render import (
    UiContext,
    UiSession,
    can_act,
    fragment,
    render,
    with_security_headers,
)
from modelfleet.hub.store.records import ACTIVE_STATES
from modelfleet.hub.timeseries import Series
from modelfleet.monitoring.profiles import DatasetProfile

router = APIRouter(include_in_schema=False)

#: How often a stream looks at its rollout, and how long it stays silent at most (a
#: comment line keeps proxies and the browser from timing the connection out).
POLL_S = 0.5
HEARTBEAT_S = 15.0
#: Live streams one hub process holds at once; one more is refused with 503.
MAX_STREAMS = 32
#: Rollouts the list shows (newest first).
MAX_LISTED = 200
#: Chart colours: the new version, its per-bucket figure, the previous version, limits.
NEW, NEW_BUCKETS, OLD, LIMIT = "#2457c5", "#6b46c1", "#1f8a4c", "#c53030"
#: Fields of the view that change on every look without anything happening.
_VOLATILE = ("elapsed_s", "bake_left_s", "deadline_left_s", "measured_at")


def actions_for(view: dict[str, Any]) -> list[str]:
    """The operator actions the controller accepts in the rollout's state."""
    state = view["state"]
    if state == "paused" and (view.get("approval") or {}).get("awaiting"):
        return ["approve", "abort", "rollback"]  # resume and promote do not skip approval
    if state == "running":
        return ["pause", "promote", "abort", "rollback"]
    if state == "paused":
        return ["resume", "promote", "abort", "rollback"]
    if state == "succeeded":
        return ["rollback"]
    return []


def timeline(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Each wave with when it started and when it passed (from the rollout's history)."""
    history = view.get("history") or []
    out = []
    for number, wave in enumerate(view["waves"], start=1):
        step = number - 1
        passed = next(
            (h.get("at") for h in history
             if h.get("step") == step and h.get("outcome") in ("success", "promote")),
            None,
        )  # fmt: skip
        if number == 1:
            started: Any = view["created_at"]
        elif number == view["step"] and view["state"] in ACTIVE_STATES:
            started = view["step_started_at"]
        else:
            started = next(
                (h.get("at") for h in history
                 if h.get("step") == step - 1 and h.get("outcome") in ("success", "promote")),
                None,
            )  # fmt: skip
        out.append({**wave, "started": started, "passed": passed})
    return out


def _live_values(view: dict[str, Any], acting: bool) -> dict[str, Any]:
    return {
        "r": view,
        "waves": timeline(view),
        "can_act": acting,
        "actions": actions_for(view) if acting else [],
    }


def _fingerprint(view: dict[str, Any]) -> Any:
    """The view without the clocks: a new event goes out only when this changes."""
    progress = view.get("progress")
    steady = dict(progress) if progress else None
    if steady is not None:
        for key in _VOLATILE:
            steady.pop(key, None)
    return repr({**view, "progress": steady, "updated_at": view.get("updated_at")})


@router.get("/ui/rollouts")
async def rollouts_page(request: Request, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    records = await run_in_threadpool(ctx.rollouts.list)
    return render(
        request,
        "rollouts.html",
        signed_in,
        title="Rollouts",
        json_twin="/api/v1/rollouts",
        rollouts=records[:MAX_LISTED],
        more=max(0, len(records) - MAX_LISTED),
    )


@router.get("/ui/rollouts/{rollout_id}")
async def rollout_page(
    request: Request, rollout_id: str, ctx: UiContext, signed_in: UiSession
) -> HTMLResponse:
    found = await run_in_threadpool(_view_or_none, ctx, rollout_id)
    if found is None:
        return render(
            request,
            "rollout.html",
            signed_in,
            title="Rollout",
            status_code=404,
            missing=rollout_id,
        )
    history = await run_in_threadpool(history_charts, ctx, found)
    return render(
        request,
        "rollout.html",
        signed_in,
        title=f"Rollout {found['id']}",
        json_twin=f"/api/v1/rollouts/{found['id']}",
        missing="",
        history=history,
        live=found["state"] in ACTIVE_STATES,
        **_live_values(found, can_act(signed_in.principal)),
    )


@router.get("/ui/rollouts/{rollout_id}/history")
async def rollout_history(rollout_id: str, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    """The gate charts alone (the page refreshes them every few seconds while live)."""
    found = await run_in_threadpool(_view_or_none, ctx, rollout_id)
    if found is None:
        return HTMLResponse("", status_code=404, headers=with_security_headers())
    history = await run_in_threadpool(history_charts, ctx, found)
    html = fragment("rollout_history.html", r=found, history=history)
    # 286: htmx stops polling (the rollout is over; these are its last figures).
    status = 200 if found["state"] in ACTIVE_STATES else 286
    return HTMLResponse(html, status_code=status, headers=with_security_headers())


def _view_or_none(ctx: HubContext, rollout_id: str) -> dict[str, Any] | None:
    record = ctx.rollouts.deployments.rollout(rollout_id)
    return None if record is None else ctx.rollouts.view(record)


@dataclass
class StreamSlots:
    """The live streams one hub process holds (bounded: each looks at its rollout twice a
    second)."""

    limit: int = MAX_STREAMS
    open: int = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open = max(0, self.open - 1)


def _slots(request: Request) -> StreamSlots:
    state = request.app.state
    slots = getattr(state, "rollout_streams", None)
    if not isinstance(slots, StreamSlots):
        slots = StreamSlots()
        state.rollout_streams = slots
    return slots


def _event(name: str, html: str) -> str:
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n\n"


@router.get("/ui/rollouts/{rollout_id}/stream")
async def rollout_stream(
    request: Request, rollout_id: str, ctx: UiContext, signed_in: UiSession
) -> Response:
    """Server-sent events: the live part of the page (``rollout_live.html``) as an event
    named ``rollout`` whenever the rollout's view changes, a comment every
    :data:`HEARTBEAT_S` otherwise. Ends when the client leaves or the hub stops (its
    notifier is closed before the server drains its open requests)."""
    if await run_in_threadpool(_view_or_none, ctx, rollout_id) is None:
        return PlainTextResponse(
            f"rollout {rollout_id!r} does not exist",
            status_code=404,
            headers=with_security_headers(),
        )
    slots = _slots(request)
    if ctx.notifier.closed:
        return PlainTextResponse(
            "the hub is stopping", status_code=503, headers=with_security_headers()
        )
    if not slots.take():
        return PlainTextResponse(
            f"too many live rollout streams on this hub ({slots.limit}); reload the page later",
            status_code=503,
            headers=with_security_headers({"Retry-After": "10"}),
        )
    acting = can_act(signed_in.principal)

    async def events() -> AsyncIterator[str]:
        try:
            last: Any = None
            said = checked = time.monotonic()
            while not ctx.notifier.closed and not await request.is_disconnected():
                view = await run_in_threadpool(_view_or_none, ctx, rollout_id)
                if view is None:
                    break  # removed meanwhile
                mark = _fingerprint(view)
                if mark != last:
                    last = mark
                    said = time.monotonic()
                    yield _event(
                        "rollout", fragment("rollout_live.html", **_live_values(view, acting))
                    )
                elif time.monotonic() - said >= HEARTBEAT_S:
                    said = time.monotonic()
                    yield ": heartbeat\n\n"
                if time.monotonic() - checked >= HEARTBEAT_S:
                    # A revoked or expired sign-in ends its open streams too.
                    checked = time.monotonic()
                    cookie = request.cookies.get(session.COOKIE)
                    if await run_in_threadpool(session.resolve, ctx, cookie) is None:
                        break
                await asyncio.sleep(POLL_S)
        finally:
            slots.give_back()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers=with_security_headers({"X-Accel-Buffering": "no"}),
    )


# --- the gates over time ----------------------------------------------------------------


@dataclass(frozen=True)
class GateHistory:
    """The charts of one rollout's gates over time, for the wave shown (``wave``)."""

    wave: int
    sites: list[str]
    bucket_s: float
    charts: list[dict[str, Any]]
    drift: dict[str, Any] | None  # the max_drift gate now (its history is not drawn)


def _values(series: Series | None, attribute: str, count: int) -> list[float | None]:
    if series is None:
        return [None] * count
    return [getattr(b, attribute) for b in series.buckets]


def history_charts(ctx: HubContext, view: dict[str, Any]) -> GateHistory:
    """Each gate's figure against its limit since the rollout started, on the sites of
    its current wave: the new version's and the previous version's telemetry windows
    (per bucket), the error rate and requests the gate counts since the wave started, and
    the limits the controller applies now (from ``progress``; from the configured gates
    once the rollout is over, when the relative p99 limit is no longer known)."""
    waves = view["waves"]
    index = max(1, min(int(view["step"]), len(waves)))
    sites = [s["site"] for s in waves[index - 1]["sites"]] if waves else []
    active = view["state"] in ACTIVE_STATES
    until = datetime.now(UTC) if active else view["updated_at"]
    found = ctx.timeseries.between(
        view["model"], view["created_at"], until, sites=sites, group_by="version"
    )
    by_version = {s.version: s for s in found.series}
    new = by_version.get(view["to_version"])
    old = by_version.get(view["from_version"]) if view["from_version"] is not None else None
    grid = next(iter(found.series), None)
    x = [b.start.timestamp() for b in grid.buckets] if grid else []
    count = len(x)
    gates = {g["gate"]: g for g in (view.get("progress") or {}).get("gates", [])}
    configured = view.get("gates") or {}

    def flat(value: float | None) -> list[float | None]:
        return [value] * count

    def line(label: str, values: list[Any], **style: Any) -> dict[str, Any]:
        return {"label": label, "values": values, **style}

    new_label = f"v{view['to_version']} (new)"
    old_label = f"v{view['from_version']} (previous)"
    p99 = [line(new_label, _values(new, "p99_s", count), color=NEW)]
    if old is not None:
        p99.append(line(old_label, _values(old, "p99_s", count), color=OLD))
    for gate, label in (("max_p99_ms", "max_p99_ms limit"), ("max_p99_ratio", "p99 ratio limit")):
        limit = gates.get(gate, {}).get("limit")
        if limit is None and gate == "max_p99_ms":
            limit = configured.get("max_p99_ms")
        if limit is not None:
            p99.append(line(label, flat(float(limit) / 1000), dash=[4, 4], color=LIMIT))

    started = view["step_started_at"].timestamp() if view.get("step_started_at") else 0.0
    counted: list[float | None] = []
    rate_since: list[float | None] = []
    total = errors = 0
    for bucket in new.buckets if new else []:
        if bucket.start.timestamp() + found.bucket_s <= started:
            counted.append(None)
            rate_since.append(None)
            continue
        total += bucket.requests
        errors += bucket.errors
        counted.append(float(total))
        rate_since.append(errors / total if total else None)
    if new is None:
        counted, rate_since = flat(None), flat(None)
    errors_chart = [
        line(f"{new_label} in the wave (gate)", rate_since, color=NEW),
        line(f"{new_label} per bucket", _values(new, "error_rate", count), color=NEW_BUCKETS),
    ]
    if old is not None:
        errors_chart.append(line(old_label, _values(old, "error_rate", count), color=OLD))
    limit = gates.get("max_error_rate", {}).get("limit", configured.get("max_error_rate"))
    if limit is not None:
        errors_chart.append(line("limit", flat(float(limit)), dash=[4, 4], color=LIMIT))
    requests_chart = [line(f"{new_label} in the wave (gate)", counted, color=NEW)]
    needed = gates.get("min_requests", {}).get("limit", configured.get("min_requests"))
    if needed is not None:
        requests_chart.append(line("needed", flat(float(needed)), dash=[4, 4], color=LIMIT))
    drift_chart = _drift_chart(ctx, view, sites, found.since, found.until, gates, configured)
    charts = [
        {"id": "gate-p99", "title": "p99: new vs previous, and the limit",
         "doc": {"x": x, "unit": "s", "series": p99}},
        {"id": "gate-errors", "title": "Error rate against max_error_rate",
         "doc": {"x": x, "unit": "ratio", "series": errors_chart}},
        {"id": "gate-requests", "title": "Requests against min_requests",
         "doc": {"x": x, "unit": "", "series": requests_chart}},
    ]  # fmt: skip
    if drift_chart is not None:
        charts.append(drift_chart)
    return GateHistory(index, sites, found.bucket_s, charts, gates.get("max_drift"))


def _drift_chart(
    ctx: HubContext,
    view: dict[str, Any],
    sites: list[str],
    since: datetime,
    until: datetime,
    gates: dict[str, Any],
    configured: dict[str, Any],
) -> dict[str, Any] | None:
    """The new version's drift figure as it grew since the rollout started, against
    ``max_drift``; only when that gate is set and the version has a reference profile."""
    limit = gates.get("max_drift", {}).get("limit", configured.get("max_drift"))
    if limit is None:
        return None
    model, version = view["model"], view["to_version"]
    doc = ctx.store.telemetry.get_reference(model, version)
    if doc is None:
        return None
    found = ctx.timeseries.drift_between(
        model,
        version,
        sites,
        since,
        until,
        DatasetProfile.from_dict(doc),
        ctx.telemetry.thresholds(model),
    )
    x = [start.timestamp() for start in found.starts]
    series = [
        {"label": f"v{version} (new) since the rollout started", "values": found.values,
         "color": NEW},
        {"label": "limit", "values": [float(limit)] * len(x), "dash": [4, 4], "color": LIMIT},
    ]  # fmt: skip
    return {
        "id": "gate-drift",
        "title": "Drift (worst input PSI / JS) against max_drift",
        "doc": {"x": x, "unit": "", "series": series},
    }
