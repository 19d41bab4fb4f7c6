"""``azureml``: an Azure Machine Learning managed online endpoint running the release's container
image, deployed through azure-ai-ml with azure-identity's default credential chain (the
``azure`` extra, imported only by the adapter, ``mlserve.adapters.azureml``). The instance types
``resources`` map to are a table in ``providers/azureml.yaml`` (``instance_table``), read when a
target has no ``instance_type``."""

from functools import lru_cache
from typing import NamedTuple

from ..vocab import ArtifactKind, DeployState, Feature
from .base import ProviderInfo

INFO = ProviderInfo(
    name="azureml",
    title="Azure ML managed online endpoint",
    layer="model-endpoint",
    options="mlserve.targets:AzureMLTarget",
    artifact=ArtifactKind.IMAGE,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,          # traffic back to the kept deployment (or it re-created)
        Feature.LOGS: None,              # Online Deployments - Get Logs
        Feature.ZERO_DOWNTIME: None,     # blue/green deployments, traffic shifted after smoke
        Feature.REPLICAS: None,          # the deployment's instance count
        Feature.AUTOSCALING: "Azure ML scales managed deployments through Azure Monitor "
                             "autoscale settings, a separate resource mlserve does not create: "
                             "the deployment runs scaling.min_replicas instances",
        Feature.SCALE_TO_ZERO: "a managed online deployment keeps at least one instance",
        Feature.GPU: None,               # a GPU SKU (resources.gpu -> the table's SKU)
        Feature.SECRETS: "Key Vault references need the endpoint's identity granted access to a "
                         "vault, which mlserve does not create: secrets are refused unless the "
                         "target sets `secrets: environment` (then anyone who can read the "
                         "deployment reads them)",
        Feature.FLEET: "one endpoint per target; Azure ML places its instances itself",
    },
    # provisioningState of endpoints and deployments (REST API: EndpointProvisioningState,
    # DeploymentProvisioningState).
    state_map={"Creating": DeployState.PENDING, "Updating": DeployState.PENDING,
               "Scaling": DeployState.READY, "Succeeded": DeployState.READY,
               "Failed": DeployState.FAILED, "Canceled": DeployState.FAILED,
               "Deleting": DeployState.DELETED},
    adapter="mlserve.adapters.azureml:AzureMLAdapter",
    extras=("azure", "docker"),         # azure-ai-ml + azure-identity, the docker SDK to push
)


class InstanceTable(NamedTuple):
    """``providers/azureml.yaml``'s ``instances``: ``gpu`` maps ``resources.gpu.type`` (upper
    case) to the SKU for each GPU count; ``cpu`` lists (SKU, vCPUs, GiB) from the smallest up."""
    gpu: dict[str, dict[int, str]]
    cpu: tuple[tuple[str, float, float], ...]


@lru_cache(maxsize=1)
def instance_table() -> InstanceTable:
    """The SKU table, read from ``providers/azureml.yaml`` and checked (a malformed table is a
    bug in the shipped data file: ValueError naming the entry)."""
    from . import prose
    data = prose("azureml").get("instances")
    where = "providers/azureml.yaml: instances"
    try:
        gpu = {str(kind).upper(): {int(n): str(sku) for n, sku in sizes.items()}
               for kind, sizes in data["gpu"].items()}
        cpu = tuple((str(row["type"]), float(row["cpu"]), float(row["memory_gib"]))
                    for row in data["cpu"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
    for kind, sizes in gpu.items():
        if not sizes or min(sizes) < 1 or not all(s.startswith("Standard_") for s in sizes.values()):
            raise ValueError(f"{where}.gpu.{kind}: Standard_* SKUs for 1 or more GPUs")
    if list(cpu) != sorted(cpu, key=lambda row: (row[1], row[2])):
        raise ValueError(f"{where}.cpu: list the SKUs from the smallest up")
    return InstanceTable(gpu, cpu)


def instance_type_for(cpu: float, memory_gib: float, gpu_type: str | None,
                      gpu_count: int = 1) -> str | None:
    """The SKU a target without ``instance_type`` gets, or None when none in the table fits."""
    table = instance_table()
    if gpu_type is not None:
        sizes = table.gpu.get(gpu_type.upper(), {})
        return next((sizes[n] for n in sorted(sizes) if n >= gpu_count), None)
    return next((name for name, cores, gib in table.cpu if cores >= cpu and gib >= memory_gib),
                None)
