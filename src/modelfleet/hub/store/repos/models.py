"""The registry's repository: models, their immutable versions and movable aliases."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime

from modelfleet.hub.store.records.models import ModelRecord, NewVersion, VersionRecord

#: Called inside the version-allocating transaction with the assigned number and
#: timestamp; returns ``(manifest_text, signature)`` to store with the row.
Sealer = Callable[[int, datetime], tuple[str, str]]

#: Given a stored version, its new ``(manifest_text, signature)``, or None to leave it.
Resealer = Callable[[VersionRecord], tuple[str, str] | None]


class ModelRepo(ABC):
    """Models, their immutable versions and movable aliases."""

    @abstractmethod
    def create_version(self, new: NewVersion, seal: Sealer) -> VersionRecord:
        """Create the model if needed and add the next version (max + 1), atomically.

        Concurrent callers for the same model get distinct consecutive numbers. If
        ``seal`` raises, nothing is written and the exception propagates.
        Raises ``NotFound`` if ``new.parent_version`` does not exist for the model.
        """

    @abstractmethod
    def get_model(self, name: str) -> ModelRecord | None: ...

    @abstractmethod
    def list_models(self) -> list[ModelRecord]:
        """All models, ordered by name."""

    @abstractmethod
    def get_version(self, name: str, version: int) -> VersionRecord | None: ...

    @abstractmethod
    def list_versions(self, name: str) -> list[VersionRecord]:
        """Versions of one model, ascending; empty if the model does not exist."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (creating or moving it). ``NotFound`` if absent."""

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> bool:
        """Remove an alias; False if it did not exist."""

    @abstractmethod
    def resolve_alias(self, name: str, alias: str) -> int | None: ...

    @abstractmethod
    def digest_referenced(self, digest: str) -> bool:
        """True if any version of any model refers to this blob."""

    @abstractmethod
    def reseal(self, reseal: Resealer) -> tuple[list[VersionRecord], list[str]]:
        """Replace the manifest and signature of every version ``reseal`` answers for, in
        one transaction that also bumps the desired-state revision of every site assigned
        one of them (so their agents fetch the new signatures). Returns the changed
        versions (as they are now) and the bumped sites."""
