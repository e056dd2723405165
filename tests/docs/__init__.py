"""Docs tests: the README and the guides, run as written."""
