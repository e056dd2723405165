"""The ``modelfleet`` command line: one module per noun."""
