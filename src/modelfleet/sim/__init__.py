"""Local fleets for tests, demos and benchmarks: real processes on loopback."""
