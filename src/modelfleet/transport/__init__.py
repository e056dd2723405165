"""HTTP plumbing shared by hub callers, sites and the gateway (see the module map below)."""
