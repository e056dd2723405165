"""Monitoring maths shared by the hub and the sites; no I/O, no service code.

- :mod:`.profiles`: mergeable data sketches of a tensor's columns (KLL for numbers, frequent
  items for categories) — what a site ships instead of rows, and a version's reference.
- :mod:`.histograms`: the fixed-bucket latency and batch-size histograms both sides share.
- :mod:`.drift`: drift statistics from two profiles (PSI, Kolmogorov-Smirnov, Jensen-Shannon)
  and their default thresholds.

Naming: a site's *telemetry* is what it sends (windows of counts, histograms and profiles;
``site/telemetry.py`` records them, ``hub/telemetry.py`` ingests and reads them); *monitoring*
is the feature built from it (status, drift, gates) and the name of this package.
"""
