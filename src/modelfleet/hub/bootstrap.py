"""`hub init`: the data directory, signing keys, the fleet CA and the first admin token;
`hub token recover`: a new admin token when every other is lost.

Both write to the hub's store directly, not through the API: whoever can read and write the
data directory already holds the signing keys and the CA, so local file access is the root
of trust and needs no token to mint one.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelfleet.errors import Conflict
from modelfleet.hub.auth import Role, hash_token, new_token_secret
from modelfleet.hub.datadir import DataDir
from modelfleet.hub.keys import HubKeys
from modelfleet.hub.store import Store, open_store
from modelfleet.hub.tls import HubTls
from modelfleet.refs import check_name
from modelfleet.registry.artifacts import open_artifact_store
from modelfleet.registry.signing import key_id, public_key_text
from modelfleet.settings import HubSettings


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    db_url: str
    artifacts_url: str
    admin_token: str
    public_key: str
    key_id: str
    ca_file: Path
    ca_fingerprint: str
    admin_expires_at: datetime


@dataclass(frozen=True)
class Recovered:
    token_id: str
    name: str
    token: str
    expires_at: datetime
    db_url: str


def _admin_ttl_s(ttl: str | float | None, settings: HubSettings) -> float:
    """The bootstrap and recovery admin tokens follow the same rules as `token create`:
    the admin default (``admin_token_ttl_s``) unless given, never above the maximum."""
    return settings.token_ttl(ttl, Role.ADMIN.value)


def init_hub(
    root: Path,
    *,
    db: str | None = None,
    artifacts: str | None = None,
    hosts: tuple[str, ...] = (),
    admin_ttl: str | float | None = None,
) -> InitResult:
    """Initialise once; a second call on the same directory is refused (``Conflict``).

    ``hosts``: names the hub is reached at beyond this machine's (its certificate carries
    them, with the loopback names and the machine's host name). ``admin_ttl``: the first
    admin token's lifetime (default ``MODELFLEET_HUB_ADMIN_TOKEN_TTL_S``, 30 days)."""
    expires = datetime.now(UTC) + timedelta(seconds=_admin_ttl_s(admin_ttl, HubSettings()))
    data_dir = DataDir(root)
    if data_dir.config_path.exists() or data_dir.has_keys() or data_dir.tls.exists():
        raise Conflict(
            f"{root} is already initialised; use `modelfleet hub serve --data-dir {root}` "
            "or choose another --data-dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    db_url = db or data_dir.default_db_url()
    artifacts_url = artifacts or data_dir.default_artifacts_url()
    open_artifact_store(artifacts_url)
    store = open_store(db_url)
    try:
        keys = HubKeys.create(root)
        key = keys.current
        try:
            tls = HubTls.create(root, hosts)
            secret = new_token_secret()
            store.tokens.create(
                name="admin",
                role=Role.ADMIN.value,
                token_hash=hash_token(secret),
                expires_at=expires,
            )
            store.audit.record(
                actor="cli:hub-init", action="hub.init", object=str(root), outcome="ok"
            )
            # Written last: its presence marks a complete initialisation.
            data_dir.write_config(db=db_url, artifacts=artifacts_url)
        except BaseException:
            # Nothing half-made: a failed init can simply be run again.
            shutil.rmtree(keys.keys_dir, ignore_errors=True)
            shutil.rmtree(data_dir.tls.dir, ignore_errors=True)
            raise
    finally:
        store.close()
    return InitResult(
        data_dir=root,
        db_url=db_url,
        artifacts_url=artifacts_url,
        admin_token=secret,
        public_key=public_key_text(key.public_key()),
        key_id=key_id(key.public_key()),
        ca_file=tls.ca_file,
        ca_fingerprint=tls.ca().fingerprint,
        admin_expires_at=expires,
    )


def local_actor() -> str:
    """How the audit log names a change made on the hub's machine, not through the API."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"local:{user}@{socket.gethostname()}"


def open_local_store(root: Path, db: str | None = None) -> Store:
    """The store of the hub whose data directory is ``root``, found as `hub serve` finds
    it: ``db``, else $MODELFLEET_HUB_DB, else what `hub init` recorded, else SQLite in
    ``root``. For the commands that act on the data directory rather than the API."""
    data_dir = DataDir(root)
    data_dir.read_config()  # one clear line when `hub init` never ran here
    db_url, _ = data_dir.resolve_backends(db or HubSettings().db, None)
    return open_store(db_url)


def recover_admin(
    root: Path,
    *,
    name: str = "recovered-admin",
    ttl: str | float | None = None,
    db: str | None = None,
) -> Recovered:
    """Mint an admin token straight in the store of the hub at ``root`` (break-glass).

    The store is found the way `hub serve` finds it (``db``, else $MODELFLEET_HUB_DB, else
    what `hub init` recorded), so it works with the hub stopped or running, on SQLite or
    PostgreSQL; a running hub accepts the token at once (an unknown hash is never cached).
    Audited as ``token.recover`` by ``local:USER@HOST``."""
    settings = HubSettings()
    check_name(name, "token name")
    expires = datetime.now(UTC) + timedelta(seconds=_admin_ttl_s(ttl, settings))
    store = open_local_store(root, db)
    db_url = store.url
    try:
        secret = new_token_secret()
        record = store.tokens.create(
            name=name, role=Role.ADMIN.value, token_hash=hash_token(secret), expires_at=expires
        )
        store.audit.record(
            actor=local_actor(),
            action="token.recover",
            object=record.id,
            outcome="ok",
            detail=f"break-glass admin token {name!r} minted from the data directory {root}; "
            f"expires {expires:%Y-%m-%dT%H:%M:%SZ}",
        )
    finally:
        store.close()
    return Recovered(record.id, name, secret, expires, db_url)
