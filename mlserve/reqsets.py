"""Requirement sets: a model's requirement lines and the venv key they hash to.

Stdlib only: the SSH host helper ships this module and builds its venvs with the same key as
the local target.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def requirement_lines(root: Path, requirements) -> list[str]:
    """The requirement lines of ``requirements`` (a file under ``root``, or a list)."""
    if isinstance(requirements, str):
        text = (root / requirements).read_text(encoding="utf-8")
        lines = [l.strip() for l in text.splitlines()]
        return [l for l in lines if l and not l.startswith("#")]
    return list(requirements or [])


def venv_key(lines: list[str]) -> str:
    """A venv's name: the hash of this interpreter's version and the requirement lines."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return hashlib.sha256("\n".join([running, *lines]).encode()).hexdigest()[:12]
