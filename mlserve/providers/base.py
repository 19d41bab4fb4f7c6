"""``ProviderInfo``: what mlserve knows about a provider without talking to it (pure).

One frozen value per provider (``mlserve/providers/<name>.py`` defines ``INFO``); everything
code decides on lives here: the options model, the artifact kind, the default build format, the
features with the reason for each one the provider lacks, the provider's state names mapped
onto ``DeployState``, the adapter that deploys it (``None``: build only) and a price hook.
The human prose (packaging, credentials, examples, notes) lives in ``providers/<name>.yaml``,
read only by the catalogue.

Pure and cheap: imports nothing but ``mlserve.vocab`` and the standard library. The options
model and the adapter are named as ``"module:Class"`` and imported on demand, so importing the
registry loads neither pydantic nor an SDK.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..vocab import ArtifactKind, DeployState, Feature

#: ``price(options, resources) -> hourly USD or None``: for ``mlserve cost`` later. None for every
#: provider today: no registered provider has a price knowable offline (local and ssh run on
#: machines mlserve does not rent; the build-only ones deploy nothing).
PriceHook = Callable[[Any, Any], "float | None"]


#: The runtime's /health words and the process conditions an adapter sees, for the providers
#: whose processes mlserve runs itself (local, ssh).
RUNTIME_STATES = MappingProxyType({
    "ready": DeployState.READY,             # GET /health 200 {"status": "ready"}
    "loading": DeployState.PENDING,         # GET /health 503 {"status": "loading"}
    "not answering": DeployState.FAILED,    # running, /health does not answer
    "not running": DeployState.FAILED,
})
#: What mlserve does itself once a provider deploys; the rest is the platform's (replicas,
#: scaling, accelerators, secrets) and is declared supported unless said otherwise.
_DEPLOYMENT_FEATURES = (Feature.ROLLBACK, Feature.LOGS, Feature.ZERO_DOWNTIME, Feature.FLEET)


def build_only(deploy_reason: str, **reasons: str) -> dict[Feature, str | None]:
    """Features of a provider mlserve only builds for: deploy refused with ``deploy_reason``,
    what a deploy would do refused as build only, ``reasons`` (feature value -> reason) added."""
    features: dict[Feature, str | None] = {f: None for f in Feature}
    features[Feature.DEPLOY] = deploy_reason
    for feature in _DEPLOYMENT_FEATURES:
        features[feature] = "build only: mlserve does not deploy to this provider yet"
    for key, why in reasons.items():
        features[Feature(key)] = why
    return features


def load_object(path: str) -> Any:
    """The object a ``"package.module:Name"`` string names (imports the module)."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    title: str                      # one line, shown in tables
    layer: str                      # the layer of the serving stack (README's table)
    options: str                    # "mlserve.targets:LocalTarget": the target's pydantic model
    artifact: ArtifactKind          # what the provider is handed
    default_format: str             # `mlserve build` format when --format is not given
    features: Mapping[Feature, str | None]   # None = supported; text = why not (shown to users)
    state_map: Mapping[str, DeployState] = field(default_factory=dict)
    adapter: str | None = None      # "mlserve.adapters.local:LocalProvider"; None = build only
    extras: tuple[str, ...] = ()    # pip extras (pyproject) a deploy to it needs: `validate --json`
    price: PriceHook | None = None

    def __post_init__(self) -> None:
        # Every feature is declared, each gap with its reason: a gap is never silent.
        missing = [f.value for f in Feature if f not in self.features]
        if missing:
            raise ValueError(f"provider {self.name!r} does not declare {', '.join(missing)}")
        blank = [f.value for f, why in self.features.items() if why is not None and not why.strip()]
        if blank:
            raise ValueError(f"provider {self.name!r} gives no reason for {', '.join(blank)}")
        if (self.adapter is None) != (self.features[Feature.DEPLOY] is not None):
            raise ValueError(f"provider {self.name!r}: an adapter exactly when it deploys")
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))
        object.__setattr__(self, "state_map", MappingProxyType(dict(self.state_map)))

    @property
    def deploys(self) -> bool:
        return self.features[Feature.DEPLOY] is None

    def supports(self, feature: Feature) -> bool:
        return self.features[feature] is None

    def reason(self, feature: Feature) -> str | None:
        """Why the provider lacks ``feature``, or None when it has it."""
        return self.features[feature]

    def unsupported(self) -> dict[str, str]:
        """feature -> reason, for the features the provider lacks (declaration order)."""
        return {f.value: why for f, why in self.features.items() if why is not None}

    def state(self, name: Any) -> DeployState:
        """The mlserve state of a provider state name; UNKNOWN for anything unmapped (a state
        the provider added later, a wrong type): never raises."""
        try:
            return self.state_map.get(name, DeployState.UNKNOWN)
        except TypeError:                      # unhashable
            return DeployState.UNKNOWN

    @property
    def options_model(self) -> type:
        """The pydantic model of this provider's target options (imports ``mlserve.targets``)."""
        return load_object(self.options)
