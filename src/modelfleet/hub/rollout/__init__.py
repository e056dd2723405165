"""Progressive rollouts: strategies (waves), gates (health checks) and the controller."""
