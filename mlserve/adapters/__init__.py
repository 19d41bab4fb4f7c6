"""Adapters, one per provider that deploys, imported only when a command needs that provider.

Which class is a provider's adapter is said once, in its registry info (``mlserve.providers``:
``info(name).adapter``, "module:Class"); a build-only provider has none and is refused here with
the reason its info gives.
"""

from __future__ import annotations

import importlib

from ..errors import InvalidInput
from .base import Adapter


def get(provider: str) -> Adapter:
    """The adapter for ``provider``; the import happens here, not at start-up."""
    from ..providers import REGISTRY, info
    from ..vocab import Feature
    spec = info(provider)
    if spec.adapter is None:
        raise InvalidInput(f"the {provider!r} provider cannot deploy: "
                           f"{spec.features[Feature.DEPLOY]}",
                           fix="package it with `mlserve build TARGET`, or deploy to a provider "
                               "mlserve deploys to: " +
                               ", ".join(n for n, i in REGISTRY.items() if i.adapter))
    module_name, _, cls_name = spec.adapter.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)()
