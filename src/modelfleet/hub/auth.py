"""Bearer tokens, roles and permissions.

Tokens are 256-bit random secrets, so a plain SHA-256 of the secret is a safe lookup key
(no slow KDF needed, unlike passwords). A token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from modelfleet.errors import PermissionDenied, Unauthenticated
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import TokenRecord

TOKEN_PREFIX = "mf_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    SITE = "site"
    #: The data plane: calls models at sites and through the gateway (checked there, offline,
    #: from the signed grant list), and reads the site directory that routing needs.
    INFER = "infer"


class Permission(StrEnum):
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    TOKENS_ADMIN = "tokens:admin"
    AUDIT_READ = "audit:read"
    SITES_READ = "sites:read"
    SITES_WRITE = "sites:write"
    DEPLOY_WRITE = "deployments:write"
    #: The site directory (``GET /api/v1/directory``): what the SDK and the gateway route with.
    DIRECTORY_READ = "directory:read"


_READ = {
    Permission.MODELS_READ,
    Permission.AUDIT_READ,
    Permission.SITES_READ,
    Permission.DIRECTORY_READ,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        _READ | {Permission.MODELS_WRITE, Permission.SITES_WRITE, Permission.DEPLOY_WRITE}
    ),
    Role.VIEWER: frozenset(_READ),
    # A site reads its own desired state and the blobs assigned to it, nothing else;
    # those checks bind to ``Principal.site`` in the sites API, not to a permission.
    Role.SITE: frozenset(),
    # An infer token calls models at sites (its grant there says which) and reads the
    # directory; nothing else on the hub.
    Role.INFER: frozenset({Permission.DIRECTORY_READ}),
}

#: Roles a human may mint with `token create`; site tokens come from enrollment only.
CREATABLE_ROLES = (Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.INFER)


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the bearer token on every request."""

    token_id: str
    name: str
    role: Role
    site: str | None = None
    #: An infer token's site selector: the directory it reads shows only those sites.
    site_selector: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.role.value}:{self.name}"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                f"role {self.role.value!r} may not {permission.value} (token {self.name!r})"
            )


def _token_hash(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing bearer token: set MODELFLEET_TOKEN or pass --token")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return hash_token(secret.strip())


def _principal(store: Store, record: TokenRecord | None) -> Principal:
    if record is None:
        raise Unauthenticated("unknown token")
    if not record.active(datetime.now(UTC)):
        state = "revoked" if record.revoked_at is not None else "expired"
        hint = (
            "; another admin can create one, or on the hub's machine: "
            "modelfleet hub token recover --data-dir DIR"
            if record.role == Role.ADMIN.value
            else ""
        )
        raise Unauthenticated(f"token {record.name!r} is {state}{hint}")
    # In memory only (written at most once a minute per token, off the request path).
    store.tokens.note_use(record.id)
    return principal_for(record)


def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer ...`` header to a principal or raise 401."""
    return _principal(store, store.tokens.find_by_hash(_token_hash(authorization)))


def authenticate_from_memory(store: Store, authorization: str | None) -> Principal | None:
    """:func:`authenticate` when the token's lookup is cached (no I/O, fit for the event
    loop); None when the database must be asked."""
    record = store.tokens.find_cached(_token_hash(authorization))
    return None if record is None else _principal(store, record)


def site_principal(site: str, serial: str) -> Principal:
    """A site authenticated by its client certificate (``serial``, hex)."""
    return Principal(token_id=f"cert:{serial}", name=f"site-{site}", role=Role.SITE, site=site)


def principal_for(record: TokenRecord) -> Principal:
    return Principal(
        token_id=record.id,
        name=record.name,
        role=Role(record.role),
        site=record.site,
        site_selector=record.site_selector,
    )
