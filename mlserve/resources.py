"""Where the shipped data lives: ``templates/`` and ``providers/``.

In a wheel they are inside the package (``mlserve/_data/``); in a source checkout they are at the
repository's top level. Both are found through ``importlib.resources`` first.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    packaged = resources.files("mlserve") / "_data" / name
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"mlserve's {name}/ directory is missing from this installation")


def templates_dir() -> Path:
    return data_dir("templates")


def providers_dir() -> Path:
    return data_dir("providers")
