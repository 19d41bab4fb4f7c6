"""``local``: this machine, one supervised process per target (the embedded default)."""

from ..vocab import ArtifactKind, Feature
from .base import RUNTIME_STATES, ProviderInfo

INFO = ProviderInfo(
    name="local",
    title="This machine",
    layer="local",
    options="mlserve.targets:LocalTarget",
    artifact=ArtifactKind.FILES,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,
        Feature.LOGS: None,
        Feature.ZERO_DOWNTIME: None,
        Feature.REPLICAS: "one process per target on this machine",
        Feature.AUTOSCALING: "one process per target on this machine: nothing scales by load",
        Feature.SCALE_TO_ZERO: "the process serves until `mlserve delete`; it is not stopped "
                               "when idle",
        Feature.GPU: "mlserve reserves no accelerator on this machine (the model sees whatever "
                     "GPUs the machine has)",
        Feature.SECRETS: None,
        Feature.FLEET: "one machine; the ssh provider deploys to several hosts",
    },
    state_map=RUNTIME_STATES,
    adapter="mlserve.adapters.local:LocalAdapter",
)
