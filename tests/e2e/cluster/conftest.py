"""Fixtures for tests against the cluster KUBECONFIG points at."""
