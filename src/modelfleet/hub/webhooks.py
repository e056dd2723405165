"""Webhook targets and the loop that delivers events to them.

Delivery is at-least-once: each (target, event) is a queued row (``store.events``) deleted
only when the target answered 2xx, so a hub killed mid-POST sends that event again after
the restart; receivers de-duplicate by ``X-Modelfleet-Event-Id``. A failed attempt is
retried with exponential back-off (equal jitter, :class:`~modelfleet.loops.Backoff`) up to
the target's ``max_attempts``, then the event goes to its dead-letter list, from which an
operator can redeliver it.

One slow or dead target never delays another: each target is drained by its own worker
thread (a bounded pool), every request has a timeout, and a target that fails stops its
own pass (its other events wait for the next) instead of timing out on each in turn.
On PostgreSQL only the replica holding the ``webhook delivery`` lease delivers (the same
advisory-lock leadership as the rollout controller); the queue's compare-and-set cursor
keeps two deliverers for a moment from queueing an event twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelfleet._version import __version__
from modelfleet.errors import InvalidInput
from modelfleet.hub.events import Events, SiteWatch, check_patterns
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import DeliveryRecord, EventRecord, WebhookRecord
from modelfleet.loops import BackgroundLoop, Backoff

log = logging.getLogger("modelfleet.hub.webhooks")

FORMATS = ("json", "slack")
MAX_URL_LEN = 2048
MAX_TARGETS = 100
#: Events a worker sends to one target per pass before giving the thread back.
BATCH = 20
PRUNE_EVERY_S = 3600.0


def shown_url(url: str) -> str:
    """``url`` as anyone who may read a schedule or a log may see it: the origin, with the
    path and query (where a Slack-style hook URL keeps its secret) left out."""
    parts = urlsplit(url)
    hidden = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{hidden}"


def check_url(url: str) -> str:
    """An http(s) URL with a host, bounded; InvalidInput saying what is wrong."""
    text = url.strip()
    if len(text) > MAX_URL_LEN:
        raise InvalidInput(f"webhook URL is {len(text)} characters; at most {MAX_URL_LEN}")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidInput("webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"webhook URL {text[:100]!r} does not parse: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"webhook URL must be http:// or https://, not {parts.scheme or 'no scheme'}:// "
            f"({text[:100]!r})"
        )
    if not parts.hostname:
        raise InvalidInput(f"webhook URL {text[:100]!r} has no host")
    if port == 0:
        raise InvalidInput(f"webhook URL {text[:100]!r} has port 0")
    return text


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Modelfleet-Signature`` value: HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sentence(event: EventRecord) -> str:
    """A human line for chat (the Slack format)."""
    p = event.payload
    if event.type.startswith("rollout."):
        move = f"{p.get('model')} {p.get('from_version')} → {p.get('to_version')}"
        what = event.type.split(".", 1)[1].replace("_", " ")
        text = f"rollout {event.subject} ({move}) {what}"
        if event.type == "rollout.wave_passed":
            text = f"rollout {event.subject} ({move}): wave {p.get('wave')}/{p.get('waves')} passed"
        reason = p.get("reason") or ""
        return f"modelfleet: {text}" + (f": {reason}" if reason else "")
    if event.type in ("site.offline", "site.online"):
        state = event.type.split(".", 1)[1]
        return f"modelfleet: site {event.subject} is {state} (last seen {p.get('last_seen')})"
    if event.type == "fl.job_finished":
        return f"modelfleet: federated job {event.subject} {p.get('state')}: {p.get('message')}"
    if event.type == "key.rotated":
        return f"modelfleet: signing key rotated to {event.subject} (was {p.get('previous')})"
    extra = p.get("message") or p.get("reason") or ""
    return f"modelfleet: {event.type} {event.subject}" + (f": {extra}" if extra else "")


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "subject": event.subject,
        "at": event.at.isoformat(),
        "payload": event.payload,
    }


def render(fmt: str, event: EventRecord) -> bytes:
    doc = {"text": sentence(event)} if fmt == "slack" else event_json(event)
    return json.dumps(doc, separators=(",", ":")).encode()


class Webhooks:
    """Webhook targets (add, list, remove, dead letters) and their delivery loop."""

    def __init__(
        self,
        store: Store,
        events: Events,
        sites: Sites,
        *,
        interval_s: float = 0.5,
        timeout_s: float = 5.0,
        workers: int = 8,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.repo = store.events
        self.events = events
        self.lease = store.leadership("webhook delivery")
        self.watch = SiteWatch(events, sites)
        self.timeout_s = timeout_s
        self.workers = workers
        self.backoff = Backoff(first_backoff_s, max_backoff_s)
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._busy: set[str] = set()
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._last_prune = 0.0
        self._loop = BackgroundLoop(
            "webhooks",
            self._step,
            interval_s=interval_s,
            logger=log,
            failure_message="webhook delivery pass failed",
        )

    # --- targets -------------------------------------------------------------------

    def add(
        self,
        *,
        url: str,
        events: list[str],
        fmt: str,
        secret: str | None,
        description: str,
        max_attempts: int,
        actor: str,
    ) -> tuple[WebhookRecord, str]:
        """Create a target that receives events from now on; returns it and its secret."""
        clean = check_url(url)
        if fmt not in FORMATS:
            raise InvalidInput(f"unknown webhook format {fmt!r}: use one of {', '.join(FORMATS)}")
        patterns = check_patterns(events)
        if not patterns:
            raise InvalidInput("give at least one event type (or * for every event)")
        if not 1 <= max_attempts <= 20:
            raise InvalidInput(f"max_attempts {max_attempts} is out of range 1..20")
        if len(self.repo.list_targets()) >= MAX_TARGETS:
            raise InvalidInput(f"at most {MAX_TARGETS} webhooks; remove one first")
        key = secret if secret is not None else secrets.token_urlsafe(32)
        target = self.repo.create_target(
            WebhookRecord(
                id="wh-" + secrets.token_hex(5),
                url=clean,
                events=patterns,
                format=fmt,
                secret=key,
                description=description,
                cursor=self.repo.last_id(),
                max_attempts=max_attempts,
                created_by=actor,
                created_at=self.repo.now(),
            )
        )
        return target, key

    def targets(self) -> list[WebhookRecord]:
        return self.repo.list_targets()

    def get(self, target_id: str) -> WebhookRecord:
        return self.repo.get_target(target_id)

    def remove(self, target_id: str) -> None:
        self.repo.delete_target(target_id)

    def view(self, target: WebhookRecord) -> dict[str, Any]:
        return {
            "id": target.id,
            "url": target.url,
            "events": target.events,
            "format": target.format,
            "description": target.description,
            "max_attempts": target.max_attempts,
            "cursor": target.cursor,
            "pending": self.repo.pending_count(target.id),
            "dead_letters": len(self.repo.dead_letters(target.id, limit=10_000)),
            "created_by": target.created_by,
            "created_at": target.created_at,
        }

    def dead_letters(self, target_id: str, limit: int) -> list[dict[str, Any]]:
        self.repo.get_target(target_id)  # NotFound for an unknown id
        dead = self.repo.dead_letters(target_id, limit=limit)
        known = self.repo.get([d.event_id for d in dead])
        return [_dead_view(d, known.get(d.event_id)) for d in dead]

    def redeliver(self, target_id: str, event_ids: list[int] | None) -> int:
        self.repo.get_target(target_id)
        return self.repo.redeliver(target_id, event_ids)

    # --- the loop ------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(3.0, self.timeout_s)),
            follow_redirects=False,
            headers={"User-Agent": f"modelfleet-hub/{__version__}"},
        )
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="webhook")
        self._loop.start()

    def stop(self) -> None:
        self._stopping.set()
        self._loop.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self.lease.release()

    def _step(self) -> None:
        if not self.lease.poll():
            return
        now = self.repo.now()
        self.watch.check(now)
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.events.prune(now)
        pool = self._pool
        if pool is None:
            return
        for target in self.repo.list_targets():
            with self._guard:
                if target.id in self._busy:
                    continue  # its worker is still at it (a slow target)
                self._busy.add(target.id)
            pool.submit(self._drain_safely, target)

    def _drain_safely(self, target: WebhookRecord) -> None:
        try:
            self.drain(target)
        except Exception:  # a worker's failure is logged; the next pass tries again
            log.exception("delivering to webhook %s failed", target.id)
        finally:
            with self._guard:
                self._busy.discard(target.id)

    def drain(self, target: WebhookRecord) -> None:
        """Queue the target's new events and send those due, oldest first."""
        self.repo.enqueue(target.id)
        for delivery in self.repo.due(target.id, self.repo.now(), limit=BATCH):
            if self._stopping.is_set():
                return
            event = self.repo.get([delivery.event_id]).get(delivery.event_id)
            if event is None:
                self.repo.dead_letter(
                    target.id, delivery.event_id, attempts=delivery.attempts, error="pruned"
                )
                continue
            error = self._send(target, event)
            if error is None:
                self.repo.acknowledge(target.id, event.id)
                continue
            attempts = delivery.attempts + 1
            if attempts >= target.max_attempts:
                log.warning(
                    "webhook %s: event %d dead-lettered after %d attempts: %s",
                    target.id, event.id, attempts, error,
                )  # fmt: skip
                self.repo.dead_letter(target.id, event.id, attempts=attempts, error=error)
            else:
                wait = self.backoff.delay(attempts)
                self.repo.retry_later(
                    target.id,
                    event.id,
                    attempts=attempts,
                    next_at=self.repo.now() + timedelta(seconds=wait),
                    error=error,
                )
            return  # a failing target: its other events wait for the next pass

    def _send(self, target: WebhookRecord, event: EventRecord) -> str | None:
        """POST one event; None if the target took it (2xx), else why not."""
        client = self._client
        if client is None:
            return "the hub is stopping"
        body = render(target.format, event)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Modelfleet-Event-Id": str(event.id),
            "X-Modelfleet-Event-Type": event.type,
            "X-Modelfleet-Timestamp": timestamp,
            "X-Modelfleet-Signature": sign(target.secret, timestamp, body),
        }
        try:
            response = client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


def _dead_view(d: DeliveryRecord, event: EventRecord | None) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "type": event.type if event else None,
        "subject": event.subject if event else None,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "updated_at": d.updated_at,
    }
