"""Refuse what a manifest asks of a provider that the provider cannot do.

``feature_problems(manifest, where, names)`` reads the manifest fields that ask for a feature
(``FEATURE_FIELDS``) and, for every target (of ``names``) whose provider lacks that feature,
returns one problem: ``file:line:col: field: what the target cannot do: the provider's reason.
Fix: ...``. ``mlserve.manifest.Project.target`` refuses the target a command acts on with them
(``plan``, ``deploy``, ``migrate``, ``build``... exit 2, before any secret is read), and
``mlserve validate`` checks every target (or the one it is given).

Per target, not per manifest: one manifest describes a model for all its targets, and a GPU
model with a ``local`` target for development and a cloud target for production is the normal
case; only the target that cannot honour the field is refused.

Only fields that make a deploy do something other than what is written are checked: a manifest
asking for several replicas, scaling to zero or an accelerator from a provider that gives none
would deploy a different service than it describes. Features no manifest field asks for
(autoscaling, fleet, logs...) are refused by the command that needs them. Build-only providers
leave replicas, scaling and accelerators to the platform that runs what they build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..vocab import Feature
from . import REGISTRY, info


@dataclass(frozen=True)
class FeatureField:
    feature: Feature
    path: tuple[str, ...]                 # the manifest field that asks for it
    asks: Callable[[Any], Any]            # manifest -> the value that asks, or None
    what: str                             # "run {value} replicas"
    fix: str


FEATURE_FIELDS = (
    FeatureField(Feature.REPLICAS, ("scaling", "max_replicas"),
                 lambda m: m.scaling.max_replicas if m.scaling.max_replicas > 1 else None,
                 "run up to {value} replicas", "set scaling.max_replicas: 1"),
    FeatureField(Feature.SCALE_TO_ZERO, ("scaling", "min_replicas"),
                 lambda m: 0 if m.scaling.min_replicas == 0 else None,
                 "scale to zero replicas", "set scaling.min_replicas: 1"),
    FeatureField(Feature.GPU, ("resources", "gpu"),
                 lambda m: m.resources.gpu.type if m.resources.gpu is not None else None,
                 "give the model an accelerator ({value})", "remove resources.gpu"),
)


def providers_with(feature: Feature) -> list[str]:
    """The providers mlserve deploys to that have ``feature``."""
    return [name for name, p in REGISTRY.items() if p.deploys and p.supports(feature)]


def feature_problems(manifest: Any, where: Callable[[tuple], str],
                     names: Iterable[str] | None = None) -> list[str]:
    """One problem per (target, feature field) the target's provider cannot honour, for the
    targets ``names`` (default: all); ``where`` locates a field path (``Located.where``)."""
    from ..strict import shown
    problems = []
    for field in FEATURE_FIELDS:
        value = field.asks(manifest)
        if value is None:
            continue
        for target_name, target in manifest.targets.items():
            if names is not None and target_name not in names:
                continue
            provider = info(target.provider)
            reason = provider.reason(field.feature)
            if reason is None:
                continue
            others = providers_with(field.feature)
            instead = f", or deploy with a provider that can ({', '.join(others)})" if others else ""
            what = field.what.format(value=shown(value))
            problems.append(f"{where(field.path)}: {'.'.join(field.path)}: target "
                            f"{shown(target_name)} (provider {provider.name}) cannot {what}: "
                            f"{reason}. Fix: {field.fix}{instead}")
    return problems
