"""The signed desired state: what one site must run, which no network path can rewrite.

Each version's manifest is signed already, but the *list* a site receives (which models,
which versions, with which parameters) must be too: otherwise a hostile path, or a replayed
old answer, could swap an active ``a:2`` back to ``a:1`` or hand the site an empty list and
unload everything. So the hub signs the whole document::

    {schema, site, revision, issued_at, expires_at, labels, models: [...], decommission}

and a site applies it only if

- a trusted hub key signed it (:class:`~.keyset.KeySet`) and it names *this* site;
- its revision is at least the last one the site applied (equal: the same state again);
- it has not expired, if it is newer than the state applied (a document held back by an
  attacker for weeks is refused; the applied one, saved at the site, stays valid);
- and, judged per model (:func:`downgrade_refusal`), each model's version is not below the
  highest the site has applied for that model, unless the hub marked that entry
  ``downgrade`` (a rollback, an abort, a pin to an older version: decisions an operator or
  a failed gate made, signed like everything else);
- it lists no model, only with ``decommission`` set, to wipe the site's last-good cache: an
  empty list on its own unloads nothing the site keeps for a restart from cache.

Documents are canonical JSON like manifests; a signature is base64 Ed25519 over the text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import VerificationError
from modelfleet.registry.keyset import KeySet, parse_signed_time, sign_text, signed_time

__all__ = [
    "DESIRED_SCHEMA",
    "DesiredModel",
    "DesiredState",
    "downgrade_refusal",
    "sign_desired_state",
    "verify_desired_state",
]

DESIRED_SCHEMA = "modelfleet.desired/v1"
#: Models one desired state may list, and its largest text: bounds what a site parses.
MAX_MODELS = 1000
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class DesiredModel:
    """One model the site must serve: the version, its signed manifest, its parameters."""

    name: str
    version: int
    ref: str
    manifest: str
    signature: str
    params: Mapping[str, Any] = field(default_factory=dict)
    downgrade: bool = False  # the hub means to go below a version the site ran

    @property
    def digest(self) -> str:
        """The blob's sha256 as the manifest states it, read without verifying (for the
        cache's keep-list only; a blob is loaded only after the manifest verified)."""
        try:
            stated = json.loads(self.manifest).get("digest")
        except (ValueError, AttributeError):
            return ""
        return stated.removeprefix("sha256:") if isinstance(stated, str) else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "manifest": self.manifest,
            "signature": self.signature,
            "params": dict(self.params),
            "downgrade": self.downgrade,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DesiredModel:
        version = doc["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("version must be a positive integer")
        params = doc.get("params", {})
        if not isinstance(params, dict):
            raise ValueError("params must be an object")
        return cls(
            name=str(doc["name"]),
            version=version,
            ref=str(doc["ref"]),
            manifest=str(doc["manifest"]),
            signature=str(doc["signature"]),
            params=params,
            downgrade=doc.get("downgrade") is True,
        )


@dataclass(frozen=True)
class DesiredState:
    site: str
    revision: int
    issued_at: datetime
    expires_at: datetime
    models: tuple[DesiredModel, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    decommission: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DESIRED_SCHEMA,
            "site": self.site,
            "revision": self.revision,
            "issued_at": signed_time(self.issued_at),
            "expires_at": signed_time(self.expires_at),
            "labels": dict(self.labels),
            "models": [m.to_dict() for m in self.models],
            "decommission": self.decommission,
        }


def sign_desired_state(state: DesiredState, key: Ed25519PrivateKey) -> tuple[str, str]:
    """The canonical text of ``state`` and the hub's signature over it."""
    text = json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":"))
    return text, sign_text(text, key)


def verify_desired_state(
    text: str,
    signature: str,
    keys: KeySet,
    *,
    site: str,
    applied_revision: int,
    now: datetime,
) -> DesiredState:
    """The desired state in ``text`` if this site may apply it (module docstring);
    :class:`VerificationError` naming the reason otherwise."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise VerificationError("desired state too large")
    keys.verify(text, signature)
    try:
        doc = json.loads(text)
        if doc.get("schema") != DESIRED_SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r} is not {DESIRED_SCHEMA!r}")
        revision = doc["revision"]
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError("revision must be an integer >= 0")
        raw_models = doc["models"]
        if not isinstance(raw_models, list) or len(raw_models) > MAX_MODELS:
            raise ValueError(f"models must be a list of at most {MAX_MODELS}")
        labels = doc.get("labels", {})
        if not isinstance(labels, dict):
            raise ValueError("labels must be an object")
        state = DesiredState(
            site=str(doc["site"]),
            revision=revision,
            issued_at=parse_signed_time(doc["issued_at"]),
            expires_at=parse_signed_time(doc["expires_at"]),
            models=tuple(DesiredModel.from_dict(m) for m in raw_models),
            labels={str(k): str(v) for k, v in labels.items()},
            decommission=doc.get("decommission") is True,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"malformed desired state: {exc}") from exc
    if state.site != site:
        raise VerificationError(f"desired state is for site {state.site!r}, not {site!r}")
    if state.revision < applied_revision:
        raise VerificationError(
            f"desired state revision {state.revision} is older than the applied "
            f"{applied_revision}; refusing a rollback of the whole state"
        )
    # Expiry refuses a document held back and delivered late; the state already applied
    # (the same revision, saved at the site) stays valid, or a site cut off from its hub
    # for longer than the lifetime could not restart.
    if state.revision > applied_revision and state.expires_at <= now:
        raise VerificationError(f"desired state expired at {signed_time(state.expires_at)}")
    names = [m.name for m in state.models]
    if len(set(names)) != len(names):
        raise VerificationError("desired state lists a model twice")
    return state


def downgrade_refusal(model: DesiredModel, applied: Mapping[str, int]) -> str | None:
    """Why ``model`` may not be applied over the versions the site ran (None: it may).

    Judged per model, so one refused entry leaves the others to converge."""
    floor = applied.get(model.name)
    if floor is not None and model.version < floor and not model.downgrade:
        return (
            f"{model.name}:{model.version} is below version {floor}, which this site ran, "
            "and the hub did not mark it as a rollback; refusing the downgrade"
        )
    return None
