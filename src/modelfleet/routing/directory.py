"""The site directory: which sites exist, where they answer, what they serve, and the
fleet's residency policies that say where a request's data may go.

Clients fetch it from the hub (``GET /api/v1/directory``), keep the last good copy on disk and
work from that copy when the hub is unreachable: the hub is needed to change the fleet, never
to keep inference running, and the policies in the copy are enforced offline as they were
online. A static directory (a list of :class:`Site`, and the policies the caller gives)
needs no hub at all.

The copy is written to :func:`default_cache_path` unless the caller names a file
(``cache_path=``, the gateway's ``--cache``): ``$MODELFLEET_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/modelfleet`` (``~/.cache/modelfleet``), one file per hub URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.errors import HubUnreachable, InvalidInput, ModelfleetError
from modelfleet.pki.tls import TlsFiles
from modelfleet.routing.residency import (
    FleetResidency,
    parse_policy_rules,
    region_jurisdictions,
)
from modelfleet.transport.client import Origin
from modelfleet.transport.session import HubSession

__all__ = ["CACHE_DIR_ENV", "Site", "SiteDirectory", "default_cache_path"]

DIRECTORY_PATH = "/api/v1/directory"
#: Where SDK and gateway caches go when no file is named (a directory).
CACHE_DIR_ENV = "MODELFLEET_CACHE_DIR"


@dataclass(frozen=True)
class Site:
    """One routing target.

    ``models`` maps a model name to the version the site serves (``None`` when the version is
    not known); ``models=None`` means "unknown, ask the site" (static lists), in which case a
    404 from the site makes the router skip it for that model.
    """

    name: str
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, int | None] | None = None
    online: bool = True

    def __post_init__(self) -> None:
        Origin.parse(self.url)  # fail early on a URL the transport cannot dial

    @property
    def jurisdiction(self) -> str | None:
        return self.labels.get("jurisdiction")

    def serves(self, model: str, version: int | None = None) -> bool | None:
        """True/False when the directory knows, None when it does not."""
        if self.models is None:
            return None
        if model not in self.models:
            return False
        known = self.models[model]
        return version is None or known is None or known == version

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Site:
        try:
            name, url = str(doc["name"]), str(doc["url"])
        except KeyError as exc:
            raise InvalidInput(f"site entry needs 'name' and 'url': {dict(doc)!r}") from exc
        labels = {str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()}
        for key in ("jurisdiction", "region", "tier", "provider"):
            if key in doc and key not in labels:
                labels[key] = str(doc[key])
        raw = doc.get("models")
        models: dict[str, int | None] | None
        if raw is None:
            models = None
        elif isinstance(raw, Mapping):
            models = {str(k): (int(v) if v is not None else None) for k, v in raw.items()}
        else:
            models = {}
            for item in raw:
                if isinstance(item, str):
                    models[item] = None
                elif item.get("ready", True):
                    version = item.get("version")
                    models[str(item["name"])] = int(version) if version is not None else None
        return cls(name, url, labels, models, bool(doc.get("online", True)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "labels": dict(self.labels),
            "online": self.online,
            "models": None
            if self.models is None
            else [{"name": k, "version": v, "ready": True} for k, v in self.models.items()],
        }


def default_cache_path(hub_url: str) -> Path:
    """``$MODELFLEET_CACHE_DIR/directory-<hash of hub URL>.json``; without that variable,
    under ``$XDG_CACHE_HOME/modelfleet`` (default ``~/.cache/modelfleet``)."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        base = Path(chosen).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "modelfleet"
    digest = hashlib.sha256(hub_url.rstrip("/").encode()).hexdigest()[:16]
    return base / f"directory-{digest}.json"


class SiteDirectory:
    """The current list of sites and residency policies, from the hub (cached on disk) or
    from a static list (``policies``: residency rule documents, as ``policy apply -f``
    takes them; only for a static list, a hub's directory brings its own)."""

    def __init__(
        self,
        *,
        hub_url: str | None = None,
        token: str | None = None,
        sites: Iterable[Site | Mapping[str, Any]] | None = None,
        policies: Iterable[Mapping[str, Any]] | None = None,
        cache_path: str | Path | None = None,
        timeout_s: float = 5.0,
        tls: TlsFiles | None = None,
    ) -> None:
        if (hub_url is None) == (sites is None):
            raise InvalidInput("give either a hub URL or a static list of sites, not both")
        if hub_url is not None and policies is not None:
            raise InvalidInput(
                "policies come from the hub's directory: give them only with a static list "
                "of sites (narrow the hub's with local residency rules instead)"
            )
        self.hub_url = hub_url.rstrip("/") if hub_url else None
        self.token = token
        self.timeout_s = timeout_s
        self._session = HubSession(hub_url, token, tls=tls, timeout=timeout_s) if hub_url else None
        self.cache_path = (
            Path(cache_path)
            if cache_path is not None
            else (default_cache_path(self.hub_url) if self.hub_url else None)
        )
        self.sites: list[Site] = (
            [s if isinstance(s, Site) else Site.from_dict(s) for s in sites]
            if sites is not None
            else []
        )
        #: The fleet's residency policies and region -> jurisdiction map, as last fetched
        #: (or cached; for a static list, the policies given and the sites' own labels).
        self.residency = FleetResidency(
            parse_policy_rules(policies or ()),
            region_jurisdictions(site.labels for site in self.sites),
        )
        self.fetched_at: float | None = time.time() if sites is not None else None
        #: "static", "hub" or "cache": where the current list came from.
        self.source = "static" if sites is not None else "none"
        self.last_error: str | None = None

    @property
    def static(self) -> bool:
        return self.hub_url is None

    def refresh(self) -> list[Site]:
        """Fetch from the hub; on failure fall back to the disk cache (or keep what we have).

        Raises :class:`HubUnreachable` only when there is nothing to fall back to.
        """
        if self.hub_url is None:
            return self.sites
        try:
            doc = self._fetch()
            self._apply(doc, "hub")
        except HubUnreachable as exc:
            self.last_error = exc.message
            if self.sites:
                return self.sites
            cached = self._load_cache()
            if cached is None:
                raise HubUnreachable(
                    f"{exc.message}; and no cached directory at {self.cache_path}"
                ) from exc
            self._apply(cached, "cache")
            return self.sites
        self._save_cache(doc)
        self.last_error = None
        return self.sites

    def close(self) -> None:
        """Release the connection to the hub (a later refresh opens a new one)."""
        if self._session is not None:
            self._session.close()

    def _fetch(self) -> dict[str, Any]:
        assert self._session is not None  # only called with a hub
        doc: dict[str, Any] = self._session.request("GET", DIRECTORY_PATH).json()
        return doc

    def _apply(self, doc: Mapping[str, Any], source: str) -> None:
        # Policies first: a copy whose policies cannot be read is not used at all (routing
        # by its sites without them could send data where a policy forbids).
        try:
            residency = FleetResidency.from_directory(doc.get("residency"))
        except InvalidInput as exc:
            raise HubUnreachable(
                f"the {source} directory's residency policies are unusable: {exc.message}"
            ) from exc
        sites = []
        for entry in doc.get("sites", []):
            if not entry.get("url"):
                continue  # never reported: nowhere to send requests
            try:
                sites.append(Site.from_dict(entry))
            except ModelfleetError:
                continue  # an unusable URL (e.g. https) must not hide the other sites
        self.sites = sites
        self.residency = residency
        self.fetched_at = time.time()
        self.source = source

    def _save_cache(self, doc: Mapping[str, Any]) -> None:
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"hub_url": self.hub_url, "directory": doc}))
            tmp.replace(self.cache_path)  # atomic: a reader never sees half a file
        except OSError:
            pass  # a read-only home must not break inference

    def _load_cache(self) -> dict[str, Any] | None:
        if self.cache_path is None or not self.cache_path.is_file():
            return None
        try:
            doc = json.loads(self.cache_path.read_text())
            directory: dict[str, Any] = doc["directory"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return directory
