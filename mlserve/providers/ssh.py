"""``ssh``: any Linux host (or a fleet of them) reached over SSH."""

from ..vocab import ArtifactKind, DeployState, Feature
from .base import RUNTIME_STATES, ProviderInfo

INFO = ProviderInfo(
    name="ssh",
    title="Any Linux host over SSH",
    layer="bare-metal",
    options="mlserve.targets:SSHTarget",
    artifact=ArtifactKind.FILES,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,
        Feature.LOGS: None,
        Feature.ZERO_DOWNTIME: None,
        Feature.REPLICAS: None,            # one replica per host in `hosts`
        Feature.AUTOSCALING: "the hosts are listed in the target: none is added or removed by "
                             "load",
        Feature.SCALE_TO_ZERO: "hosts are yours and always on",
        Feature.GPU: None,                 # the hosts' own accelerators
        Feature.SECRETS: None,
        Feature.FLEET: None,
    },
    state_map={**RUNTIME_STATES, "unreachable": DeployState.UNREACHABLE},
    adapter="mlserve.adapters.ssh:SSHAdapter",
    extras=("ssh",),
)
