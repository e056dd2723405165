"""Records of access control: bearer tokens (by hash) and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class TokenRecord:
    """A bearer token as stored: only its hash is kept, never the secret."""

    id: str
    name: str
    role: str  # admin | operator | viewer | site
    site: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    #: An ``infer`` token's scope: the models it may call (None: all) and a label selector
    #: over the sites it may call (None: all). Other roles leave both None.
    models: tuple[str, ...] | None = None
    site_selector: str | None = None
    #: When the hub last authenticated this token (None: never, or not yet recorded).
    last_used_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        """True when the token is neither revoked nor expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log: who did what to which object, and how it ended."""

    id: int
    at: datetime
    actor: str
    action: str
    object: str
    outcome: str  # "ok" or an error code such as "forbidden"
    detail: str
