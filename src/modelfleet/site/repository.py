"""The set of loaded models the server consults on every request.

Reads vastly outnumber writes (one lookup per request against one swap per rollout), so
readers take no lock: writers build a new immutable mapping under a lock and publish it
with a single attribute assignment, which CPython makes atomic. A reader sees either the
old mapping or the new one, never a half-updated one.

Swaps need no draining either. A request that already looked up the old
:class:`LoadedModel` holds a reference to it and finishes on it; lookups after the swap get
the new one; CPython's reference counting frees the old session the moment the last
request holding it returns. That is "load the new before unloading the old" without any
bookkeeping of in-flight requests.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from modelfleet.errors import Conflict, NotFound
from modelfleet.site.runtime import LoadedModel

__all__ = ["ModelRepository"]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One name's versions: the active one and, at most, the one it replaced."""

    active: LoadedModel
    loaded: Mapping[int, LoadedModel]


class ModelRepository:
    """Thread-safe, lock-free for readers; holds the active and previous version per name.

    Keeping the previous version loaded lets ``/versions/{v}`` keep answering for clients
    pinned to it during a swap or canary, and makes a rollback instant. Older versions are
    dropped when a newer one is activated, so memory stays bounded at two per name.
    """

    def __init__(self) -> None:
        self._write_lock = threading.Lock()
        self._entries: Mapping[str, _Entry] = MappingProxyType({})

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The active version, or a specific loaded one; ``NotFound`` lists what is loaded."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"model {name!r} is not loaded at this site")
        if version is None:
            return entry.active
        model = entry.loaded.get(version)
        if model is None:
            raise NotFound(
                f"version {version} of model {name!r} is not loaded; "
                f"loaded: {sorted(entry.loaded)} (active {entry.active.version})"
            )
        return model

    def activate(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` the active version of its name; returns the version it replaced.

        The replaced version stays loaded as the previous one; any other version is dropped.
        Activating the active version's number again replaces it and keeps the previous one.
        """
        with self._write_lock:
            entry = self._entries.get(model.name)
            if entry is None:
                replaced = None
                loaded: dict[int, LoadedModel] = {model.version: model}
            else:
                replaced = entry.active
                if replaced.version == model.version:
                    loaded = dict(entry.loaded)
                else:
                    loaded = {replaced.version: replaced}
                loaded[model.version] = model
            self._publish(model.name, _Entry(model, MappingProxyType(loaded)))
        return replaced

    def retire(self, name: str, version: int) -> LoadedModel:
        """Drop a loaded version that is not active (e.g. once a canary is promoted)."""
        with self._write_lock:
            entry = self._entries.get(name)
            if entry is None or version not in entry.loaded:
                raise NotFound(f"version {version} of model {name!r} is not loaded")
            if entry.active.version == version:
                raise Conflict(
                    f"version {version} of model {name!r} is active; activate another or "
                    "remove the model instead"
                )
            loaded = {v: m for v, m in entry.loaded.items() if v != version}
            self._publish(name, _Entry(entry.active, MappingProxyType(loaded)))
            return entry.loaded[version]

    def remove(self, name: str) -> list[LoadedModel]:
        """Unassign a model: drop every version. Returns what was dropped (empty if none)."""
        with self._write_lock:
            entry = self._entries.get(name)
            if entry is None:
                return []
            self._publish(name, None)
            return list(entry.loaded.values())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Name -> ``{"active": v, "loaded": [v, ...]}``, from one consistent view."""
        entries = self._entries
        return {
            name: {"active": entry.active.version, "loaded": sorted(entry.loaded)}
            for name, entry in sorted(entries.items())
        }

    def _publish(self, name: str, entry: _Entry | None) -> None:
        """Swap in a new mapping; the caller holds the write lock."""
        entries = dict(self._entries)
        if entry is None:
            entries.pop(name, None)
        else:
            entries[name] = entry
        self._entries = MappingProxyType(entries)
