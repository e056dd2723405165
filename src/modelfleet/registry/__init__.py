"""The registry's building blocks: artifact stores, signed manifests, ONNX admission.

Heavier pieces (onnx, fsspec drivers) load only when their module is imported, so importing
this package stays cheap for processes that need just the manifest checks.
"""

from modelfleet.registry.artifacts import ArtifactStore, LocalArtifactStore, open_artifact_store
from modelfleet.registry.manifest import (
    build_manifest,
    canonical_json,
    sha256_file,
    sign_manifest,
    verify_manifest,
)
from modelfleet.registry.signing import (
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_text,
)

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "build_manifest",
    "canonical_json",
    "generate_signing_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "open_artifact_store",
    "public_key_text",
    "sha256_file",
    "sign_manifest",
    "verify_manifest",
]
