"""Shared pytest configuration: real components are started by the plugins in tests/infra/."""

pytest_plugins = [
    "tests.infra.components",
]
