"""The provider catalogue: ``providers/*.yaml`` (one file per provider), as plain dicts."""

from __future__ import annotations

import yaml

from .resources import providers_dir

REQUIRED = ("name", "title", "layer", "packaging", "deploy", "credentials", "capabilities",
            "unsupported")


def catalogue() -> list[dict]:
    entries = []
    for path in sorted(providers_dir().glob("*.yaml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        entries.append(entry)
    return entries
