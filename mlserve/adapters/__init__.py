"""Adapters, one per provider, imported only when a command needs that provider."""

from __future__ import annotations

import importlib

from ..errors import InvalidInput
from .base import Provider

_REGISTRY = {
    "local": "mlserve.adapters.local:LocalProvider",
    "ssh": "mlserve.adapters.ssh:SSHProvider",
}


def get(provider: str) -> Provider:
    """The adapter for ``provider``; the import happens here, not at start-up."""
    spec = _REGISTRY.get(provider)
    if spec is None:
        raise InvalidInput(f"the {provider!r} provider can be packaged with `mlserve build` but "
                           "not deployed by this version",
                           fix="deploy the built package with the provider's own tool, or use a "
                               "target whose provider is one of: " + ", ".join(sorted(_REGISTRY)))
    module_name, _, cls_name = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
