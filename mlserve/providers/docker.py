"""``docker``: a container image, the generic package for SageMaker, Vertex AI, Azure ML,
Runpod and Kubernetes; ``mlserve deploy`` runs it as a container on a Docker engine."""

from ..vocab import ArtifactKind, DeployState, Feature
from .base import ProviderInfo

INFO = ProviderInfo(
    name="docker",
    title="Container image",
    layer="container",
    options="mlserve.targets:DockerTarget",
    artifact=ArtifactKind.IMAGE,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,
        Feature.LOGS: None,
        Feature.ZERO_DOWNTIME: None,     # SO_REUSEPORT handover between containers, host network
        Feature.REPLICAS: "one container per target on one engine",
        Feature.AUTOSCALING: "one container per target: nothing scales by load",
        Feature.SCALE_TO_ZERO: "the container serves until `mlserve delete`",
        Feature.GPU: None,               # a DeviceRequest for resources.gpu.count GPUs
        Feature.SECRETS: None,           # the container's environment, never the image
        Feature.FLEET: "one engine per target; the ssh provider deploys to several hosts",
    },
    # Docker Engine API, a container's State.Status.
    state_map={"created": DeployState.PENDING, "restarting": DeployState.PENDING,
               "running": DeployState.READY, "paused": DeployState.FAILED,
               "exited": DeployState.FAILED, "dead": DeployState.FAILED,
               "removing": DeployState.DELETED},
    adapter="mlserve.adapters.docker:DockerAdapter",
    extras=("docker",),
)
