"""/api/v1/tokens and /api/v1/audit: access control (admins only) and its trail (audit:read:
viewers and up)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from modelfleet.api import AuditEntry, Token, TokenCreated, TokenIn
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.api.schemas import audit_entry, token_of
from modelfleet.hub.auth import CREATABLE_ROLES, Permission, Role, hash_token, new_token_secret
from modelfleet.hub.context import HubContext
from modelfleet.hub.selectors import parse_selector
from modelfleet.refs import check_name
from modelfleet.settings import parse_duration

router = APIRouter(prefix="/api/v1", tags=["access"])


@router.post("/tokens", status_code=201, response_model=TokenCreated, summary="Create a token")
def create_token(body: TokenIn, ctx: Context, caller: Caller) -> TokenCreated:
    require(ctx, caller, Permission.TOKENS_ADMIN, "token.create", body.name)
    with audited(ctx, caller, "token.create", body.name) as detail:
        check_name(body.name, "token name")
        if body.role not in {r.value for r in CREATABLE_ROLES}:
            allowed = ", ".join(r.value for r in CREATABLE_ROLES)
            hint = (
                " (site tokens come from `site add` enrollment)" if body.role == Role.SITE else ""
            )
            raise InvalidInput(f"invalid role {body.role!r}: expected one of {allowed}{hint}")
        ttl_s = ctx.settings.token_ttl(body.ttl, body.role)
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
        models, selector = _scope(body)
        secret = new_token_secret()
        record = ctx.store.tokens.create(
            name=body.name,
            role=body.role,
            token_hash=hash_token(secret),
            expires_at=expires,
            models=models,
            site_selector=selector,
        )
        detail.append(f"id {record.id} role {record.role} expires {expires:%Y-%m-%dT%H:%M:%SZ}")
        if models is not None or selector is not None:
            detail.append(f"models {','.join(models or ['*'])} sites {selector or '*'}")
    if record.role != Role.SITE:  # every other role is in the grant lists
        _grants_changed(ctx)
    return TokenCreated(**token_of(record).model_dump(), token=secret)


@router.get("/tokens", response_model=list[Token], summary="List tokens (never secrets)")
def list_tokens(ctx: Context, caller: Caller) -> list[Token]:
    caller.require(Permission.TOKENS_ADMIN)
    return [token_of(t) for t in ctx.store.tokens.list()]


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(token_id: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.TOKENS_ADMIN, "token.revoke", token_id)
    with audited(ctx, caller, "token.revoke", token_id):
        if not ctx.store.tokens.revoke(token_id):
            known = ctx.store.tokens.get(token_id)
            if known is None:
                raise NotFound(f"no token with id {token_id!r}")
            raise InvalidInput(f"token {token_id!r} is already revoked")
    revoked = ctx.store.tokens.get(token_id)
    if revoked is not None and revoked.role != Role.SITE:
        _grants_changed(ctx)
    return Response(status_code=204)


def _scope(body: TokenIn) -> tuple[tuple[str, ...] | None, str | None]:
    """An infer token's models and site selector, checked; other roles take neither."""
    if body.models is None and body.site_selector is None:
        return None, None
    if body.role != Role.INFER:
        raise InvalidInput(
            f"models and site selectors scope infer tokens only, not role {body.role!r}"
        )
    models: tuple[str, ...] | None = None
    if body.models is not None:
        if not body.models:
            raise InvalidInput("models: give at least one model name, or leave it out for all")
        models = tuple(dict.fromkeys(check_name(m, "model name") for m in body.models))
    selector = None
    if body.site_selector is not None:
        parsed = parse_selector(body.site_selector)  # InvalidInput names the bad term
        if not parsed.terms:
            raise InvalidInput("site selector is empty: leave it out for every site")
        selector = body.site_selector.strip()
    return models, selector


def _grants_changed(ctx: HubContext) -> None:
    """Every site's grant list changes: its long-poll answers now (other replicas' polls
    see it within their once-a-second re-check)."""
    ctx.sites.grants.forget()
    ctx.notifier.notify_many([s.name for s in ctx.store.sites.list()])


#: Bounds of the audit filters: a name is at most this long, a page at most this deep.
AUDIT_FILTER_CHARS = 256
AUDIT_MAX_OFFSET = 1_000_000
_SINCE_HELP = (
    "Entries at or after this: an ISO 8601 time (2026-12-03T18:00:00Z) or a duration back "
    "from now (90m, 12h, 7d)."
)


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``since`` as a time: ISO 8601 (naive means UTC) or a duration back from now."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            seconds = parse_duration(value, "since")
        except InvalidInput:
            raise InvalidInput(
                f"since {value!r} is neither an ISO 8601 time (2026-12-03T18:00:00Z) nor a "
                "duration (90m, 12h, 7d)"
            ) from None
        return (now or datetime.now(UTC)) - timedelta(seconds=min(seconds, 3650 * 86400.0))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def audit_entries(
    ctx: HubContext,
    *,
    limit: int = 100,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
    object: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
) -> list[AuditEntry]:
    """The audit log, newest first, filtered (the API and the dashboard's audit page);
    empty filters are no filter."""
    return [
        audit_entry(a)
        for a in ctx.store.audit.list(
            limit=limit,
            offset=offset,
            actor=actor or None,
            action=action or None,
            object=object or None,
            outcome=outcome or None,
            since=parse_since(since),
        )
    ]


_Filter = Annotated[str | None, Query(max_length=AUDIT_FILTER_CHARS)]


@router.get("/audit", response_model=list[AuditEntry], summary="The audit log, newest first")
def list_audit(
    ctx: Context,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0, le=AUDIT_MAX_OFFSET)] = 0,
    actor: _Filter = None,
    action: _Filter = None,
    object: Annotated[
        str | None, Query(max_length=AUDIT_FILTER_CHARS, description="Exact object name.")
    ] = None,
    outcome: Annotated[
        str | None, Query(max_length=64, description="ok, forbidden, an error code, ...")
    ] = None,
    since: Annotated[str | None, Query(max_length=64, description=_SINCE_HELP)] = None,
) -> list[AuditEntry]:
    caller.require(Permission.AUDIT_READ)
    return audit_entries(
        ctx,
        limit=limit,
        offset=offset,
        actor=actor,
        action=action,
        object=object,
        outcome=outcome,
        since=since,
    )
