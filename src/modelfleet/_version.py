"""The package version, in a module of its own: every layer reads it, and importing it from
``modelfleet/__init__.py`` (which re-exports the SDK) would make each of them import upwards."""

__version__ = "0.1.0"
