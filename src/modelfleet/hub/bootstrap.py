"""`hub init`: the data directory, signing keys, the fleet CA and the first admin token."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from modelfleet.errors import Conflict
from modelfleet.hub.auth import Role, hash_token, new_token_secret
from modelfleet.hub.datadir import DataDir
from modelfleet.hub.keys import HubKeys
from modelfleet.hub.store import open_store
from modelfleet.hub.tls import HubTls
from modelfleet.registry.artifacts import open_artifact_store
from modelfleet.registry.signing import key_id, public_key_text


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


def init_hub(
    root: Path,
    *,
    db: str | None = None,
    artifacts: str | None = None,
    hosts: tuple[str, ...] = (),
) -> InitResult:
    """Initialise once; a second call on the same directory is refused (``Conflict``).

    ``hosts``: names the hub is reached at beyond this machine's (its certificate carries
    them, with the loopback names and the machine's host name)."""
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
            store.tokens.create(name="admin", role=Role.ADMIN.value, token_hash=hash_token(secret))
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
    )
