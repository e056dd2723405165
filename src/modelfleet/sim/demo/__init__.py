"""``modelfleet demo``: a smart-factory fleet end to end, on the embedded default."""

from modelfleet.sim.demo.scenario import run_demo

__all__ = ["run_demo"]
