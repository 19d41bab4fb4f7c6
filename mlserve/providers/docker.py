"""``docker``: a container image, the generic package for SageMaker, Vertex AI, Azure ML,
Runpod and Kubernetes. Build only."""

from ..vocab import ArtifactKind, DeployState
from .base import ProviderInfo, build_only

INFO = ProviderInfo(
    name="docker",
    title="Container image",
    layer="container",
    options="mlserve.targets:DockerTarget",
    artifact=ArtifactKind.IMAGE,
    default_format="docker",
    # Replicas, scaling and accelerators are the choice of whatever runs the image (a GPU
    # request gives a CUDA base image).
    features=build_only("images are built and pushed with `mlserve build`; deploying them to a "
                        "cloud endpoint comes with that cloud's adapter"),
    # Docker Engine API, a container's State.Status.
    state_map={"created": DeployState.PENDING, "restarting": DeployState.PENDING,
               "running": DeployState.READY, "paused": DeployState.FAILED,
               "exited": DeployState.FAILED, "dead": DeployState.FAILED,
               "removing": DeployState.DELETED},
)
