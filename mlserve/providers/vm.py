"""``vm``: a managed cloud VM booted with cloud-init user-data (AWS EC2, GCP, Azure). Build only."""

from ..vocab import ArtifactKind, DeployState
from .base import ProviderInfo, build_only

INFO = ProviderInfo(
    name="vm",
    title="Managed cloud VM (cloud-init)",
    layer="managed-vm",
    options="mlserve.targets:VMTarget",
    artifact=ArtifactKind.USER_DATA,
    default_format="cloud-init",
    # Several VMs, scaling to zero and GPUs come from the instance group and instance type that
    # boot the user-data.
    features=build_only("this version renders the user-data (`mlserve build`); pass it to the "
                        "cloud's VM launch"),
    # EC2 instance state names (GCE and Azure names are mapped with their adapters).
    state_map={"pending": DeployState.PENDING, "running": DeployState.READY,
               "stopping": DeployState.FAILED, "stopped": DeployState.FAILED,
               "shutting-down": DeployState.DELETED, "terminated": DeployState.DELETED},
)
