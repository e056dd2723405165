"""Events and webhooks on the real fleet (a hub and three site agents, ``conftest.py``),
with real HTTP receivers in the test (threaded ``http.server`` on loopback).

A canary rollout emits ``rollout.started``, one ``rollout.wave_passed`` per wave and
``rollout.succeeded``, once each and in order; ``modelfleet events --json`` lists them; an
SSE stream held during the rollout sees them live and resumes from ``Last-Event-ID``; a
healthy receiver gets each once with a valid signature while a receiver answering 500 is
retried and then dead-lettered; a SIGKILLed and restarted hub re-delivers nothing that was
acknowledged and emits no transition twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.api.events import Event
from modelfleet.errors import ModelfleetError
from modelfleet.hub_client import HubClient
from tests.deploy.fleet import CANARY, Fleet, baseline, deploy, settle, traffic, wait_for
from tests.docs.blocks import fenced_blocks
from tests.webhook_receiver import receiver

SECRET = "a-test-secret-of-enough-length"


def _docs_verifier() -> Callable[..., bool]:
    """``verify_signature`` exactly as docs/events.md shows it (so the snippet works)."""
    page = Path(__file__).resolve().parents[2] / "docs" / "events.md"
    code = next(b.text for b in fenced_blocks(page) if "def verify_signature" in b.text)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/events.md", "exec"), scope)
    verifier: Callable[..., bool] = scope["verify_signature"]
    return verifier


def verify(request: dict[str, Any], secret: str) -> bool:
    """What a receiver does: HMAC-SHA256 over ``<timestamp>.<raw body>``; checked both by
    hand and with the documented snippet, which must agree."""
    ts = request["headers"]["x-modelfleet-timestamp"]
    expected = hmac.new(secret.encode(), ts.encode() + b"." + request["body"], hashlib.sha256)
    by_hand = hmac.compare_digest(
        request["headers"]["x-modelfleet-signature"], "sha256=" + expected.hexdigest()
    )
    documented = _docs_verifier()(secret, request["headers"], request["body"])
    tampered = _docs_verifier()(secret, request["headers"], request["body"] + b" ")
    return by_hand and documented and not tampered


@contextmanager
def stream(fleet: Fleet, after: int | None = None) -> Iterator[list[Event]]:
    """An SSE stream held in a thread; events collected as they arrive."""
    seen: list[Event] = []
    hc = HubClient(fleet.hub.url, fleet.token)

    def run() -> None:
        try:
            for event in hc.stream_events(after=after):
                seen.append(event)
        except ModelfleetError:
            pass  # closed by the test

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        hc.close()
        thread.join(timeout=10)


def _of(events: list[Any], rollout_id: str) -> list[str]:
    return [e["type"] for e in events if e["subject"] == rollout_id]


def test_rollout_events_stream_webhooks_dead_letters_and_restart(fleet: Fleet) -> None:
    with receiver(200) as good, receiver(500) as bad:
        hooked = fleet.admin.create_webhook(
            good.url + "/hook", ["rollout.*", "site.*"], secret=SECRET
        )
        assert hooked.secret == SECRET
        slack = fleet.admin.create_webhook(
            good.url + "/slack", ["rollout.succeeded"], format="slack"
        )
        failing = fleet.admin.create_webhook(bad.url + "/hook", ["rollout.*"], max_attempts=2)
        assert len(failing.secret) >= 32  # made by the hub, shown once
        assert "secret" not in fleet.admin.list_webhooks()[0].model_dump()

        baseline(fleet, "evented")
        fleet.admin.push(fleet.model(offset=3.0), "evented", training_regions=["global"])
        with stream(fleet) as live, traffic(fleet, "evented"):
            result = deploy(
                fleet,
                "evented:2",
                strategy={**CANARY, "bake_s": 1, "progress_deadline_s": 60},
                gates={"max_error_rate": 0.05, "min_requests": 3},
            )
            rid = result["rollout"]["id"]
            r = settle(fleet, rid, ("succeeded", "failed", "paused"))
            assert r["state"] == "succeeded", r["reason"]
            expected = ["rollout.started"] + ["rollout.wave_passed"] * 3 + ["rollout.succeeded"]
            wait_for(
                lambda: [e.type for e in live if e.subject == rid] == expected,
                timeout=30,
                what="the live stream to show the rollout",
            )

        # The log, through the CLI: each transition once, in order.
        listed = json.loads(fleet.cli("events", "--json", "--type", "rollout.*", "--limit", "1000"))
        assert _of(listed, rid) == expected
        mine = [e for e in listed if e["subject"] == rid]
        assert [e["payload"]["wave"] for e in mine[1:4]] == [1, 2, 3]
        assert [e["id"] for e in mine] == sorted(e["id"] for e in mine)
        print("events:", [(e["id"], e["type"]) for e in mine])

        # Resume from Last-Event-ID: the stream starts right after the given id.
        with stream(fleet, after=mine[0]["id"]) as resumed:
            wait_for(lambda: len(resumed) >= 4, timeout=15, what="the resumed stream")
        assert [e.id for e in resumed[:4]] == [e["id"] for e in mine[1:]]

        # The healthy target: every rollout event once, each signed.
        ids = [e["id"] for e in mine]
        wait_for(lambda: set(ids) <= set(good.ids()), timeout=30, what="deliveries")
        with good.lock:
            hook_requests = [r for r in good.got if r["path"] == "/hook"]
            slack_requests = [r for r in good.got if r["path"] == "/slack"]
        assert all(verify(req, SECRET) for req in hook_requests)
        bodies = {int(req["headers"]["x-modelfleet-event-id"]): json.loads(req["body"])
                  for req in hook_requests}  # fmt: skip
        assert [bodies[i]["type"] for i in ids] == expected
        assert hook_requests[0]["headers"]["x-modelfleet-event-type"].startswith("rollout.")
        duplicates = len(good.ids()) - len(set(good.ids()))
        print(f"healthy receiver: {len(good.ids())} deliveries, {duplicates} duplicates")
        assert duplicates == 0
        wait_for(lambda: len(slack_requests) >= 1 or good.ids("/slack"), timeout=30)
        with good.lock:
            texts = [json.loads(r["body"]) for r in good.got if r["path"] == "/slack"]
        assert any(rid in t["text"] and "succeeded" in t["text"] for t in texts), texts
        assert all(set(t) == {"text"} for t in texts)

        # The failing target: each event tried twice (its max_attempts), then dead-lettered;
        # the healthy one above got everything meanwhile.
        wait_for(
            lambda: (
                set(ids) <= {d.event_id for d in fleet.admin.list_dead_letters(failing.id, 1000)}
            ),
            timeout=90,
            what="dead letters",
        )
        dead = {d.event_id: d for d in fleet.admin.list_dead_letters(failing.id, 1000)}
        assert all(dead[i].attempts == 2 and dead[i].last_error == "HTTP 500" for i in ids)
        assert all(bad.ids().count(i) == 2 for i in ids)
        out = fleet.cli("webhook", "dead-letters", failing.id)
        assert "HTTP 500" in out
        # Redelivered once the target is healthy again.
        bad.status = 200
        assert fleet.admin.redeliver_webhook(failing.id, [ids[0]]).requeued == 1
        wait_for(lambda: bad.ids().count(ids[0]) == 3, timeout=30, what="redelivery")

        # SIGKILL with everything acknowledged: nothing is delivered again after the restart,
        # and the restarted controller (re-deriving every rollout's events) adds none.
        wait_for(
            lambda: next(w for w in fleet.admin.list_webhooks() if w.id == hooked.id).pending == 0,
            timeout=30,
        )
        before = good.ids()
        logged = len(fleet.admin.list_events(types=["rollout.*"], limit=1000))
        fleet.hub.kill()
        fleet.restart_hub()
        fleet.cli("rollout", "rollback", rid)  # one new event after the restart
        wait_for(lambda: len(good.ids()) > len(before), timeout=30, what="delivery after restart")
        after = good.ids()
        again = [i for i in after[len(before) :] if i in before]
        print(f"after SIGKILL: {len(after) - len(before)} new deliveries, {len(again)} repeats")
        assert again == []
        events_now = fleet.admin.list_events(types=["rollout.*"], limit=1000)
        assert len(events_now) == logged + 1
        assert events_now[-1].type == "rollout.rolled_back"
        assert _of([e.model_dump() for e in events_now], rid)[-1] == "rollout.rolled_back"
        for target in (hooked.id, slack.id, failing.id):
            fleet.cli("webhook", "rm", target)
        assert fleet.admin.list_webhooks() == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": "ftp://x", "events": ["*"]}, "http:// or https://"),
        ({"url": "http://", "events": ["*"]}, "no host"),
        ({"url": "http://h/" + "a" * 3000, "events": ["*"]}, "url"),
        ({"url": "http://h/", "events": ["*"], "format": "xml"}, "format"),
        ({"url": "http://h/", "events": ["Rollout!"]}, "invalid event type"),
        ({"url": "http://h/", "events": []}, "events"),
        ({"url": "http://h/", "events": ["*"], "secret": "short"}, "secret"),
        ({"url": "http://h/", "events": ["*"], "max_attempts": 99}, "max_attempts"),
    ],
)
def test_bad_webhooks_refused_with_the_reason(
    fleet: Fleet, body: dict[str, Any], reason: str
) -> None:
    answer = httpx.post(
        f"{fleet.hub.url}/api/v1/webhooks",
        json=body,
        headers={"Authorization": f"Bearer {fleet.token}"},
    )
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=100000", "after=-1", "type=BAD", "type=rollout.*.x", "type=a." + "b" * 99],
)
def test_bad_event_queries_refused(fleet: Fleet, query: str) -> None:
    answer = httpx.get(
        f"{fleet.hub.url}/api/v1/events?{query}",
        headers={"Authorization": f"Bearer {fleet.token}"},
    )
    assert answer.status_code == 400, answer.text


def test_cli_refuses_a_non_http_webhook_in_one_line(fleet: Fleet) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", "webhook", "add", "ftp://x", "--events", "rollout.*",
         "--hub", fleet.hub.url, "--token", fleet.token],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "http:// or https://" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
