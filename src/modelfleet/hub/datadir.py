"""The hub's data directory: signing keys, TLS material, recorded backends, first-run set-up.

``hub init`` records the database and artifact URLs in ``hub.json`` so ``hub serve``
needs only ``--data-dir``; flags and env vars still override them at serve time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.hub.keys import KEYS_DIR, KEYSET_FILE, LEGACY_KEY_FILE, HubKeys
from modelfleet.hub.tls import HubTls

CONFIG_FILE = "hub.json"


@dataclass(frozen=True)
class DataDir:
    """Paths and recorded backend URLs of one hub data directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def has_keys(self) -> bool:
        """Signing keys exist (the key set, or a single key from before key sets)."""
        return (self.root / KEYS_DIR / KEYSET_FILE).exists() or (
            self.root / LEGACY_KEY_FILE
        ).exists()

    def keys(self) -> HubKeys:
        """The signing key set (see :mod:`modelfleet.hub.keys`)."""
        return HubKeys(self.root)

    @property
    def tls(self) -> HubTls:
        """The fleet CA and the hub's certificate (see :mod:`modelfleet.hub.tls`)."""
        return HubTls(self.root)

    @property
    def tmp_dir(self) -> Path:
        """Where uploads are spooled before validation; same filesystem as the artifacts."""
        return self.root / "tmp"

    def default_db_url(self) -> str:
        return f"sqlite:///{(self.root / 'hub.db').resolve()}"

    def default_artifacts_url(self) -> str:
        return str((self.root / "artifacts").resolve())

    def initialised(self) -> bool:
        return self.config_path.exists() and self.has_keys()

    def read_config(self) -> dict[str, str]:
        if not self.config_path.exists():
            raise InvalidInput(
                f"{self.root} is not a hub data directory (no {CONFIG_FILE}); "
                f"run `modelfleet hub init --data-dir {self.root}` first"
            )
        try:
            data = json.loads(self.config_path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read {self.config_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"{self.config_path} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def write_config(self, *, db: str, artifacts: str) -> None:
        if self.config_path.exists():
            raise Conflict(f"{self.root} is already initialised ({self.config_path} exists)")
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"db": db, "artifacts": artifacts}, indent=2) + "\n")
        os.replace(tmp, self.config_path)

    def resolve_backends(self, db: str | None, artifacts: str | None) -> tuple[str, str]:
        """Flags win over what ``hub init`` recorded, which wins over the defaults."""
        recorded = self.read_config() if self.config_path.exists() else {}
        return (
            db or recorded.get("db") or self.default_db_url(),
            artifacts or recorded.get("artifacts") or self.default_artifacts_url(),
        )
