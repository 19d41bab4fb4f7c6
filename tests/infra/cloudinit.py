"""``cloud-init schema`` (Debian ``cloud-init``, which starts nothing when installed): fixture
``cloud_init_schema`` to validate rendered user-data."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.policy import require_tool


@dataclass
class CloudInitSchema:
    """``argv + [path]`` validates one file: exit 0 when valid, 1 listing every error.

    cloud-init 22.4 needs ``#cloud-config`` as the first line and does not flag unknown
    top-level keys."""

    argv: list[str]  # [".../cloud-init", "schema", "--config-file"]

    def validate(self, path: Path) -> subprocess.CompletedProcess:
        """Run the check on ``path``; look at ``returncode`` and ``stdout``/``stderr``."""
        return subprocess.run([*self.argv, str(path)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def cloud_init_schema() -> CloudInitSchema:
    """The `cloud-init schema --config-file` command (checks only that it is installed)."""
    binary = require_tool("cloud_init_schema", "cloud-init", "cloud-init")
    return CloudInitSchema([binary, "schema", "--config-file"])
