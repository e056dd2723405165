"""The store backends of the contract suite, reused for the deployments store."""

from tests.hub.store.conftest import backend_url, open_backend, sqlite_url

__all__ = ["backend_url", "open_backend", "sqlite_url"]
