"""``sagemaker``: an AWS SageMaker real-time endpoint (or Serverless Inference) running the
release's container image, deployed through boto3 (the ``aws`` extra, imported only by the
adapter, ``mlserve.adapters.sagemaker``)."""

from ..vocab import ArtifactKind, DeployState, Feature
from .base import ProviderInfo

INFO = ProviderInfo(
    name="sagemaker",
    title="AWS SageMaker endpoint",
    layer="model-endpoint",
    options="mlserve.targets:SageMakerTarget",
    artifact=ArtifactKind.IMAGE,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,          # UpdateEndpoint back to the kept endpoint config
        Feature.LOGS: None,              # CloudWatch Logs /aws/sagemaker/Endpoints/NAME
        Feature.ZERO_DOWNTIME: None,     # blue/green UpdateEndpoint with auto-rollback
        Feature.REPLICAS: None,          # the variant's instance count
        Feature.AUTOSCALING: None,       # Application Auto Scaling, target tracking
        Feature.SCALE_TO_ZERO: None,     # Serverless Inference (the target's `serverless`)
        Feature.GPU: None,               # a GPU instance type (resources.gpu -> instance family)
        Feature.SECRETS: "SageMaker has no secret references in a model's environment: secrets "
                         "are refused unless the target sets `secrets: environment` (then anyone "
                         "who can describe the model reads them)",
        Feature.FLEET: "one endpoint per target; SageMaker places its instances itself",
    },
    # DescribeEndpoint's EndpointStatus (SageMaker API reference, EndpointStatus).
    state_map={"OutOfService": DeployState.FAILED, "Creating": DeployState.PENDING,
               "Updating": DeployState.PENDING, "SystemUpdating": DeployState.READY,
               "RollingBack": DeployState.PENDING, "InService": DeployState.READY,
               "Deleting": DeployState.DELETED, "Failed": DeployState.FAILED,
               "UpdateRollbackFailed": DeployState.FAILED},
    adapter="mlserve.adapters.sagemaker:SageMakerAdapter",
    extras=("aws", "docker"),           # boto3 for the API, the docker SDK to build and push
)

#: ``resources.gpu.type`` -> the SageMaker instance family that has it, and the size to ask for
#: each GPU count (SageMaker's instance types; a count between two sizes takes the larger).
GPU_INSTANCES: dict[str, tuple[str, dict[int, str]]] = {
    "T4": ("ml.g4dn", {1: "xlarge", 4: "12xlarge"}),
    "A10G": ("ml.g5", {1: "xlarge", 4: "12xlarge", 8: "48xlarge"}),
    "L4": ("ml.g6", {1: "xlarge", 4: "12xlarge", 8: "48xlarge"}),
    "L40S": ("ml.g6e", {1: "xlarge", 4: "12xlarge", 8: "48xlarge"}),
    "V100": ("ml.p3", {1: "2xlarge", 4: "8xlarge", 8: "16xlarge"}),
    "A100": ("ml.p4d", {8: "24xlarge"}),
    "H100": ("ml.p5", {8: "48xlarge"}),
}
#: CPU instances (ml.m5: 4 GiB per vCPU): the smallest that holds ``resources`` cpu and memory.
CPU_INSTANCES = (("ml.m5.large", 2, 8), ("ml.m5.xlarge", 4, 16), ("ml.m5.2xlarge", 8, 32),
                 ("ml.m5.4xlarge", 16, 64), ("ml.m5.12xlarge", 48, 192),
                 ("ml.m5.24xlarge", 96, 384))


def instance_type_for(cpu: float, memory_gib: float, gpu_type: str | None,
                      gpu_count: int = 1) -> str | None:
    """The instance type a target without ``instance_type`` gets, or None when no instance in
    the tables fits (the adapter then asks for ``instance_type``)."""
    if gpu_type is not None:
        family, sizes = GPU_INSTANCES.get(gpu_type.upper(), (None, {}))
        size = next((sizes[n] for n in sorted(sizes) if n >= gpu_count), None)
        return f"{family}.{size}" if family and size else None
    return next((name for name, cores, gib in CPU_INSTANCES if cores >= cpu and gib >= memory_gib),
                None)
