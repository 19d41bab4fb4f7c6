"""Fixtures that start real components (sshd, dockerd, a registry, ...). Filled in by tests/infra work."""
