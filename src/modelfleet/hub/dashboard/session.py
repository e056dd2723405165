"""Dashboard sessions: a bearer token exchanged once for a session cookie.

Why a cookie at all: a browser cannot be trusted to keep a bearer token out of its history,
its address bar or a page's markup, and the issue forbids a token in any of them. So the
sign-in form posts the token once; the hub answers with a cookie that names the token by
its *id* (never its secret) and carries an expiry, sealed with an HMAC.

- **Stateless across replicas.** The HMAC key is derived (HKDF) from the hub's current
  signing key, which every replica of one fleet shares; no session table, no sticky load
  balancer. Rotating the signing key therefore signs every browser out.
- **Revocation is immediate.** Every request looks the token up by id: a revoked or expired
  token ends its sessions at once, and a session never outlives its token.
- **CSRF.** The cookie is ``SameSite=Strict`` and ``HttpOnly`` (``Secure`` over TLS). On top,
  a request that changes something and authenticates by cookie must carry
  ``X-CSRF-Token``: an HMAC of the cookie that only a page the hub rendered can know (it
  sits in a ``<meta>`` tag), and its ``Origin``, when sent, must be the hub's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelfleet.errors import PermissionDenied, Unauthenticated
from modelfleet.hub.auth import Principal, Role, principal_for
from modelfleet.hub.context import HubContext

COOKIE = "mf_session"
CSRF_HEADER = "x-csrf-token"
#: Roles that may sign in to the dashboard: people, not sites or the data plane.
UI_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A cookie longer than this is refused unread (the real one is ~150 bytes).
MAX_COOKIE_CHARS = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(ctx: HubContext) -> bytes:
    raw = ctx.registry.keys.current.private_bytes_raw()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"modelfleet-ui").derive(raw)


@dataclass(frozen=True)
class Session:
    """A verified session: the principal it acts as and its CSRF token."""

    principal: Principal
    csrf: str
    expires_at: datetime


def csrf_for(ctx: HubContext, cookie: str) -> str:
    """The CSRF token of one cookie value (pages embed it; unsafe requests echo it)."""
    return hmac.new(_key(ctx), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()[:40]


def issue(ctx: HubContext, principal: Principal, token_expires: datetime | None) -> tuple[str, int]:
    """A new cookie value for ``principal`` and its lifetime in seconds."""
    lifetime = ctx.settings.ui_session_hours * 3600.0
    now = time.time()
    expires = now + lifetime
    if token_expires is not None:
        expires = min(expires, token_expires.timestamp())
    payload = _b64(
        json.dumps(
            {"t": principal.token_id, "e": int(expires), "n": secrets.token_hex(8)},
            separators=(",", ":"),
        ).encode()
    )
    mac = hmac.new(_key(ctx), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}", max(1, int(expires - now))


def _payload(ctx: HubContext, cookie: str) -> Mapping[str, Any] | None:
    if len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    expected = hmac.new(_key(ctx), payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        doc = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), str):
        return None
    if not isinstance(doc.get("e"), int):
        return None
    return doc


def resolve(ctx: HubContext, cookie: str | None) -> Session | None:
    """The session a cookie names, or None when it is absent, forged, expired, or its
    token is no longer active (revoked, expired, removed)."""
    if not cookie:
        return None
    doc = _payload(ctx, cookie)
    if doc is None or doc["e"] <= time.time():
        return None
    record = ctx.store.tokens.get(doc["t"])
    now = datetime.now(UTC)
    if record is None or not record.active(now) or Role(record.role) not in UI_ROLES:
        return None
    ctx.store.tokens.note_use(record.id)
    return Session(
        principal=principal_for(record),
        csrf=csrf_for(ctx, cookie),
        expires_at=datetime.fromtimestamp(doc["e"], UTC),
    )


def same_origin(headers: Mapping[str, str], scheme: str, host: str | None) -> bool:
    """False when the request names an ``Origin`` that is not the hub's own."""
    origin = headers.get("origin")
    if origin is None or host is None:
        return True
    return origin == f"{scheme}://{host}"


def check_unsafe(
    ctx: HubContext, session: Session, method: str, headers: Mapping[str, str], scheme: str
) -> None:
    """A cookie-authenticated request that changes state: CSRF token and origin checked."""
    if method.upper() in SAFE_METHODS:
        return
    if not same_origin(headers, scheme, headers.get("host")):
        raise PermissionDenied("cross-origin request refused")
    sent = headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise PermissionDenied(
            "missing or wrong X-CSRF-Token: a request signed in by cookie must echo the "
            "token of the page the hub served"
        )


def check_ui_role(principal: Principal) -> None:
    """Only people sign in to the dashboard."""
    if principal.role not in UI_ROLES:
        raise Unauthenticated(
            f"a {principal.role.value} token cannot sign in to the dashboard; "
            "use a viewer, operator or admin token"
        )
