"""The one provider registry: every provider mlserve knows, and what derives from it.

``REGISTRY`` maps a provider's name to its ``ProviderInfo`` (``mlserve/providers/<name>.py``);
adding a provider adds one module and one line below. Everything that lists providers derives
from it, each checked by a test: the manifest's ``Target`` union and JSON Schema
(``mlserve.targets``), ``mlserve build``'s default format and ``--format`` choices
(``formats()``), the adapters (``info(name).adapter``), ``mlserve providers`` and README's table
(``catalogue()``, which adds the prose of ``providers/<name>.yaml``).

Pure and cheap to import (no pydantic, no SDK, no file read): the CLI's start-up imports it.
"""

from __future__ import annotations

from ..errors import NotFound
from . import azureml, baseten, docker, local, replicate, sagemaker, ssh, vertex, vm
from .base import ProviderInfo

REGISTRY: dict[str, ProviderInfo] = {m.INFO.name: m.INFO
                                     for m in (local, ssh, docker, sagemaker, replicate, baseten,
                                               vm, vertex, azureml)}

#: What a ``providers/<name>.yaml`` may say: prose for people. What code decides on (features,
#: states, formats, the adapter) is in the provider's Python module, said once.
PROSE_KEYS = ("name", "packaging", "credentials", "examples", "used_by", "notes")
#: Data tables a provider's module reads from its ``providers/<name>.yaml`` (and validates):
#: ``instances``, the instance types ``resources`` map to, kept beside the provider's prose so
#: they are updated in one data file as a cloud adds instance families.
TABLE_KEYS = ("instances",)


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def info(name: str) -> ProviderInfo:
    """The info of provider ``name``; ``NotFound`` (exit 2) naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        from ..strict import shown
        raise NotFound(f"no provider {shown(name)}",
                       fix=f"use one of: {', '.join(REGISTRY)}") from None


def extras(providers) -> list[str]:
    """The pip extras a deploy to these providers needs (``pip install 'mlserve[a,b]'``), sorted."""
    return sorted({e for name in providers for e in info(name).extras})


def formats() -> tuple[str, ...]:
    """The build formats providers use by default, in registry order (``mlserve build --format``)."""
    return tuple(dict.fromkeys(i.default_format for i in REGISTRY.values()))


def prose(name: str) -> dict:
    """The human data of ``providers/<name>.yaml`` (read on demand)."""
    import yaml
    from ..resources import providers_dir
    path = providers_dir() / f"{name}.yaml"
    data = yaml.load(path.read_text(encoding="utf-8"),
                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    extra = sorted(set(data) - set(PROSE_KEYS) - set(TABLE_KEYS))
    if data.get("name") != name or extra:
        raise ValueError(f"{path}: name must be {name!r}; keys other than "
                         f"{', '.join(PROSE_KEYS + TABLE_KEYS)} belong in "
                         f"mlserve/providers/{name}.py (found: {', '.join(extra) or 'none'})")
    return data


def describe(provider: ProviderInfo) -> dict:
    """One catalogue entry: the info, then the prose (what `mlserve providers --json` prints)."""
    data = prose(provider.name)
    return {
        "name": provider.name, "title": provider.title, "layer": provider.layer,
        "deploy": provider.deploys, "artifact": provider.artifact.value,
        "default_format": provider.default_format, "extras": list(provider.extras),
        "packaging": data.get("packaging", ""),
        "features": {f.value: why for f, why in provider.features.items()},
        "unsupported": provider.unsupported(),
        "states": {k: v.value for k, v in provider.state_map.items()},
        "credentials": data.get("credentials", []),
        **{k: data[k] for k in ("examples", "used_by", "notes") if k in data},
    }


def catalogue() -> list[dict]:
    """Every provider, in registry order, as ``describe`` shows it."""
    return [describe(p) for p in REGISTRY.values()]
