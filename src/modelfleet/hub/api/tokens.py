"""/api/v1/tokens and /api/v1/audit: access control and its trail (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from modelfleet.api import AuditEntry, Token, TokenCreated, TokenIn
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.api.schemas import audit_entry, token_of
from modelfleet.hub.auth import CREATABLE_ROLES, Permission, Role, hash_token, new_token_secret
from modelfleet.refs import check_name

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
        secret = new_token_secret()
        record = ctx.store.tokens.create(
            name=body.name, role=body.role, token_hash=hash_token(secret), expires_at=expires
        )
        detail.append(f"id {record.id} role {record.role} expires {expires:%Y-%m-%dT%H:%M:%SZ}")
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
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditEntry], summary="The audit log, newest first")
def list_audit(
    ctx: Context,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    caller.require(Permission.AUDIT_READ)
    return [audit_entry(a) for a in ctx.store.audit.list(limit=limit, actor=actor, action=action)]
