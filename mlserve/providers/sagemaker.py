"""``sagemaker``: an AWS SageMaker real-time endpoint (or Serverless Inference) running the
release's container image, deployed through boto3 (the ``aws`` extra, imported only by the
adapter, ``mlserve.adapters.sagemaker``). The instance types ``resources`` map to are a table in
``providers/sagemaker.yaml`` (``instance_table``), read when a target has no ``instance_type``."""

from functools import lru_cache
from typing import NamedTuple

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

class InstanceTable(NamedTuple):
    """``providers/sagemaker.yaml``'s ``instances``: ``gpu`` maps ``resources.gpu.type`` (upper
    case) to its instance family and the size to ask for each GPU count; ``cpu`` lists
    (type, vCPUs, GiB) from the smallest up."""
    gpu: dict[str, tuple[str, dict[int, str]]]
    cpu: tuple[tuple[str, float, float], ...]


@lru_cache(maxsize=1)
def instance_table() -> InstanceTable:
    """The instance table, read from ``providers/sagemaker.yaml`` and checked (a malformed table
    is a bug in the shipped data file: ValueError naming the entry)."""
    from . import prose
    data = prose("sagemaker").get("instances")
    where = "providers/sagemaker.yaml: instances"
    try:
        gpu = {str(kind).upper(): (str(row["family"]), {int(n): str(size)
                                                        for n, size in row["sizes"].items()})
               for kind, row in data["gpu"].items()}
        cpu = tuple((str(row["type"]), float(row["cpu"]), float(row["memory_gib"]))
                    for row in data["cpu"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
    for kind, (family, sizes) in gpu.items():
        if not family.startswith("ml.") or not sizes or min(sizes) < 1:
            raise ValueError(f"{where}.gpu.{kind}: a family ml.* with sizes for 1 or more GPUs")
    if list(cpu) != sorted(cpu, key=lambda row: (row[1], row[2])):
        raise ValueError(f"{where}.cpu: list the types from the smallest up")
    return InstanceTable(gpu, cpu)


def instance_type_for(cpu: float, memory_gib: float, gpu_type: str | None,
                      gpu_count: int = 1) -> str | None:
    """The instance type a target without ``instance_type`` gets, or None when no instance in
    the tables fits (the adapter then asks for ``instance_type``)."""
    table = instance_table()
    if gpu_type is not None:
        family, sizes = table.gpu.get(gpu_type.upper(), (None, {}))
        size = next((sizes[n] for n in sorted(sizes) if n >= gpu_count), None)
        return f"{family}.{size}" if family and size else None
    return next((name for name, cores, gib in table.cpu if cores >= cpu and gib >= memory_gib),
                None)
