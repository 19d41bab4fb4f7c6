"""Pytest plugin: fixtures that start real components for the test suite.

Listed once in tests/conftest.py; it loads the fixture modules below, so nothing else needs
registering. Fixtures (all session-scoped; details in each module and tests/README-infra.md):

- ``sshd_host``, ``sshd_user_host``  (tests.infra.sshd)
- ``ssh_fleet``                      (tests.infra.fleet; root)
- ``dockerd``, ``registry``, ``base_image``  (tests.infra.containers; dockerd/base_image root)
- ``cloud_init_schema``              (tests.infra.cloudinit)
- ``systemd_host``                   (tests.infra.systemd; root)
- ``s3_store``                       (tests.infra.s3: moto's S3 server)
- ``moto_server``, ``sagemaker_emulator``, ``sagemaker_env``  (tests.infra.sagemaker; the
  emulator runs containers: root)
- ``vertex_emulator``, ``vertex_env``  (tests.infra.vertex; runs containers: root)
- ``azureml_emulator``, ``azureml_env``  (tests.infra.azureml; the emulator runs containers: root)

A test using (directly or through other fixtures) a fixture that starts processes is marked
``slow``; one needing root components is also marked ``root``; so ``-m "not slow and not
root"`` deselects them without anyone marking tests by hand.

Missing components skip locally and fail under ``CI=true``: see tests.infra.policy.require.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.infra.sshd",
    "tests.infra.fleet",
    "tests.infra.containers",
    "tests.infra.cloudinit",
    "tests.infra.systemd",
    "tests.infra.s3",
    "tests.infra.sagemaker",
    "tests.infra.vertex",
    "tests.infra.azureml",
]

ROOT_FIXTURES = frozenset({"ssh_fleet", "dockerd", "base_image", "systemd_host",
                           "sagemaker_emulator", "sagemaker_env", "vertex_emulator",
                           "vertex_env", "azureml_emulator", "azureml_env"})
SLOW_FIXTURES = ROOT_FIXTURES | {"sshd_host", "sshd_user_host", "registry", "s3_store",
                                 "moto_server"}


def pytest_configure(config: pytest.Config) -> None:
    # also declared in pyproject.toml; repeated so the plugin works from any rootdir
    config.addinivalue_line("markers", "slow: starts processes, venvs or containers")
    config.addinivalue_line("markers", "root: needs root-only components")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & ROOT_FIXTURES:
            item.add_marker(pytest.mark.root)
