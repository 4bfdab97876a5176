"""testenv operator: provisions TestEnvironment resources (kopf)."""
