"""The start-up sweep: what a hub killed mid-upload left in the artifact store is removed.

A push publishes its blob before its version row commits (so a row never names a missing
blob). A hub killed in between leaves a blob that no version references, plus perhaps an
upload spool file (``<data-dir>/tmp/upload-*.onnx``) and an artifact-store temporary. Each
start, before it serves, the hub removes those that are older than
``MODELFLEET_HUB_UPLOAD_GRACE_S`` (default an hour):

- the age bound is what makes it safe with several replicas on one store: a blob another
  replica published a moment ago, whose row is about to commit, is younger than the grace.
  A re-push of bytes already stored refreshes the blob's time (local stores), so an old
  orphan that is being pushed again is young again too;
- it is bounded: at most :data:`MAX_REMOVED_BLOBS` blobs per start (the rest go at the next
  start, each logged), one cheap query per stored blob;
- it never stops the start: a failing store is logged and the hub serves (the next start
  tries again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from modelfleet.errors import ModelfleetError
from modelfleet.hub.store import Store
from modelfleet.registry.artifacts import ArtifactStore

__all__ = ["MAX_REMOVED_BLOBS", "SweepResult", "sweep_upload_leftovers"]

log = logging.getLogger("modelfleet.hub.artifact_sweep")

#: Most orphan blobs one start removes; more are left for the next start.
MAX_REMOVED_BLOBS = 1000
#: The spool's file names (see :mod:`modelfleet.hub.uploads`).
SPOOL_GLOB = "upload-*.onnx"


@dataclass(frozen=True)
class SweepResult:
    """What one sweep removed, for the start-up log line and the tests."""

    blobs: int = 0
    temporaries: int = 0
    spooled: int = 0


def sweep_upload_leftovers(
    store: Store, artifacts: ArtifactStore, spool_dir: Path, *, grace_s: float
) -> SweepResult:
    """Remove unreferenced blobs, store temporaries and spool files older than ``grace_s``."""
    cutoff = time.time() - grace_s
    try:
        temporaries = artifacts.cleanup_temporaries(older_than_s=grace_s)
        blobs = _orphan_blobs(store, artifacts, cutoff)
    except ModelfleetError as exc:
        log.warning("artifact sweep of %s skipped: %s", artifacts.url, exc)
        return SweepResult()
    result = SweepResult(blobs=blobs, temporaries=temporaries, spooled=_spool(spool_dir, cutoff))
    if result != SweepResult():
        log.warning(
            "removed what interrupted uploads left: %d unreferenced blob(s) and %d "
            "temporary file(s) in %s, %d spooled upload(s) in %s",
            result.blobs,
            result.temporaries,
            artifacts.url,
            result.spooled,
            spool_dir,
        )
    return result


def _orphan_blobs(store: Store, artifacts: ArtifactStore, cutoff: float) -> int:
    removed = 0
    for digest in artifacts.list_digests():
        if removed >= MAX_REMOVED_BLOBS:
            log.warning("artifact sweep stopped after %d blobs; the next start goes on", removed)
            break
        stored_at = artifacts.modified_at(digest)
        if stored_at is None or stored_at >= cutoff:
            continue  # unknown age or too young: maybe an upload whose row is committing
        if store.models.digest_referenced(digest):
            continue
        if artifacts.delete(digest):
            log.info("removed unreferenced blob sha256:%s", digest)
            removed += 1
    return removed


def _spool(spool_dir: Path, cutoff: float) -> int:
    removed = 0
    try:
        entries = list(spool_dir.glob(SPOOL_GLOB))
    except OSError as exc:
        log.warning("cannot list the upload spool %s: %s", spool_dir, exc)
        return 0
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove spooled upload %s: %s", entry, exc)
    return removed
