"""The hub: registry, placement, rollouts, telemetry and federation behind one HTTP API."""
