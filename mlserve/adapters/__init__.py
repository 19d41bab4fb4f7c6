"""Adapters, one per provider, imported only when a command needs that provider."""

from __future__ import annotations

import importlib

from ..errors import InvalidInput
from .base import Adapter

_REGISTRY = {
    "local": "mlserve.adapters.local:LocalAdapter",
    "ssh": "mlserve.adapters.ssh:SSHProvider",
}


def get(provider: str) -> Adapter:
    """The adapter for ``provider``; the import happens here, not at start-up."""
    spec = _REGISTRY.get(provider)
    if spec is None:
        from ..providers import catalogue
        reason = next((e["unsupported"].get("deploy") for e in catalogue() if e["name"] == provider),
                      None) or "not implemented yet"
        raise InvalidInput(f"the {provider!r} provider cannot deploy: {reason}",
                           fix="package it with `mlserve build TARGET`, or deploy to a provider "
                               "mlserve deploys to: " + ", ".join(sorted(_REGISTRY)))
    module_name, _, cls_name = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
