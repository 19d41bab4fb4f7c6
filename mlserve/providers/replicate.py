"""``replicate``: Replicate, packaged with Cog. Build only."""

from ..vocab import ArtifactKind, DeployState
from .base import ProviderInfo, build_only

INFO = ProviderInfo(
    name="replicate",
    title="Replicate",
    layer="model-endpoint",
    options="mlserve.targets:ReplicateTarget",
    artifact=ArtifactKind.COG,
    default_format="cog",
    features=build_only(
        "this version renders the Cog package (`mlserve build`); push it with `cog push`",
        logs="Replicate has no log API for deployments",
        secrets="Replicate has no secret store for a model's environment: whoever runs the "
                "container sets the secrets"),
    # Cog's server, GET /health-check {"status": ...}.
    state_map={"STARTING": DeployState.PENDING, "READY": DeployState.READY,
               "BUSY": DeployState.READY, "SETUP_FAILED": DeployState.FAILED,
               "DEFUNCT": DeployState.FAILED},
)
