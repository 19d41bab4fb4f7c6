"""JSON Schemas of what ``--json`` prints, shipped in the package (``output/<name>.json``).

One file per command that takes ``--json`` (``deploy.json`` ...), plus ``error.json``: the object
every command prints on stdout under ``--json`` when it fails. ``rollback`` prints what
``deploy`` prints, so it has no file of its own (``SAME_AS``). ``mlserve schema --output NAME``
prints one; ``tests/test_output_schemas.py`` runs every ``--json`` command the CLI has and
checks its real output against its schema, so a new command without a schema fails there.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

#: Commands whose --json output is another command's.
SAME_AS = {"rollback": "deploy"}
ERROR = "error"


def _files():
    return resources.files(__name__) / "output"


def names() -> list[str]:
    """Every name ``mlserve schema --output`` takes: the files, and the commands in ``SAME_AS``."""
    found = {p.name.removesuffix(".json") for p in _files().iterdir() if p.name.endswith(".json")}
    return sorted(found | set(SAME_AS))


def load(name: str) -> dict[str, Any]:
    """The schema of ``name`` (a command, or ``error``); ``KeyError`` when there is none."""
    path = _files() / f"{SAME_AS.get(name, name)}.json"
    if not path.is_file():
        raise KeyError(name)
    return json.loads(path.read_text(encoding="utf-8"))
