"""``mlserve init``: a working model, requirements file, manifest and ignore file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .errors import InvalidInput
from .resources import templates_dir

FILES = {"model.py": "model.py.j2", "requirements.txt": "requirements.txt.j2",
         "mlserve.yaml": "mlserve.yaml.j2", ".mlserveignore": "mlserveignore.j2"}


def default_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.absolute().name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".strip("-")
    return name[:40].rstrip("-") or "model"


def scaffold(directory: Path, *, name: str | None = None, port: int = 8080,
             force: bool = False) -> list[Path]:
    import jinja2
    name = name or default_name(directory)
    if not re.match(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", name):
        raise InvalidInput(f"{name!r} is not a valid model name",
                           fix="use 1-40 lowercase letters, digits and dashes, starting with a letter: "
                               "mlserve init DIR --name my-model")
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range", fix="use a port from 1 to 65535")
    existing = [directory / f for f in FILES if (directory / f).exists()]
    if existing and not force:
        raise InvalidInput(f"{existing[0]} already exists",
                           fix="choose an empty directory, or pass --force to overwrite")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir() / "init"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    directory.mkdir(parents=True, exist_ok=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    written = []
    for out, template in FILES.items():
        text = env.get_template(template).render(name=name, port=port, python=python)
        (directory / out).write_text(text, encoding="utf-8")
        written.append(directory / out)
    return written
