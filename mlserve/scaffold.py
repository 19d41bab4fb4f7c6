"""``mlserve init``: a working model, requirements file, manifest and ignore file.

The files are rendered from templates/init through ``mlserve.render`` (its quoting filters and
its check that no value is written unquoted); ``--name`` must be a manifest name, matched whole
(a trailing line break is not a name)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .errors import InvalidInput
from .manifest import NAME_RE
from .render import render

FILES = {"model.py": "model.py.j2", "requirements.txt": "requirements.txt.j2",
         "mlserve.yaml": "mlserve.yaml.j2", ".mlserveignore": "mlserveignore.j2"}


def default_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.absolute().name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".strip("-")
    return name[:40].rstrip("-") or "model"


def scaffold(directory: Path, *, name: str | None = None, port: int = 8080,
             force: bool = False) -> list[Path]:
    name = default_name(directory) if name is None else name
    if not re.fullmatch(NAME_RE, name):
        raise InvalidInput(f"{name!r} is not a valid model name",
                           fix="use 1-40 lowercase letters, digits and dashes, starting with a letter: "
                               "mlserve init DIR --name my-model")
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range", fix="use a port from 1 to 65535")
    existing = [directory / f for f in FILES if (directory / f).exists()]
    if existing and not force:
        raise InvalidInput(f"{existing[0]} already exists",
                           fix="choose an empty directory, or pass --force to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    written = []
    for out, template in FILES.items():
        text = render("init", template, name=name, port=port, python=python)
        (directory / out).write_text(text, encoding="utf-8")
        written.append(directory / out)
    return written
