"""``vertex``: a Google Vertex AI online prediction endpoint serving the release's container
image, deployed through google-cloud-aiplatform (the ``gcp`` extra, imported only by the
adapter, ``mlserve.adapters.vertex``). The machine types and accelerators ``resources`` map to
are a table in ``providers/vertex.yaml`` (``instances``), read when a target has no
``machine_type``."""

from functools import lru_cache
from typing import NamedTuple

from ..vocab import ArtifactKind, DeployState, Feature
from .base import ProviderInfo

INFO = ProviderInfo(
    name="vertex",
    title="Google Vertex AI endpoint",
    layer="model-endpoint",
    options="mlserve.targets:VertexTarget",
    artifact=ArtifactKind.IMAGE,
    default_format="docker",
    features={
        Feature.DEPLOY: None,
        Feature.ROLLBACK: None,          # the kept Model deployed again beside, traffic shifted
        Feature.LOGS: None,              # Cloud Logging, resource aiplatform.googleapis.com/Endpoint
        Feature.ZERO_DOWNTIME: None,     # the new deployed model beside the old, then 100% traffic
        Feature.REPLICAS: None,          # dedicatedResources min/max replica count
        Feature.AUTOSCALING: None,       # Vertex scales between min and max replicas itself
        Feature.SCALE_TO_ZERO: "a Vertex AI deployed model keeps at least one replica "
                               "(minReplicaCount >= 1)",
        Feature.GPU: None,               # resources.gpu -> accelerator + machine type (table)
        Feature.SECRETS: "a Vertex AI model's container env has no secret references: secrets "
                         "are refused unless the target sets `secrets: environment` (then anyone "
                         "who can get the model reads them)",
        Feature.FLEET: "one endpoint per target; Vertex AI places its replicas itself",
    },
    # The states ``observe`` derives from the endpoint (Vertex endpoints have no status field):
    # a deployed model with traffic, models deploying (a running DeployModel operation), an
    # endpoint without a deployed model.
    state_map={"SERVING": DeployState.READY, "DEPLOYING": DeployState.PENDING,
               "EMPTY": DeployState.FAILED},
    adapter="mlserve.adapters.vertex:VertexAdapter",
    extras=("gcp", "docker"),           # google-cloud-aiplatform for the API, docker to build and push
)


class MachineTable(NamedTuple):
    """``providers/vertex.yaml``'s ``instances``: ``gpu`` maps ``resources.gpu.type`` (upper
    case) to Vertex's accelerator type and the machine type for each GPU count; ``cpu`` lists
    (machine type, vCPUs, GiB) from the smallest up."""
    gpu: dict[str, tuple[str, dict[int, str]]]
    cpu: tuple[tuple[str, float, float], ...]


@lru_cache(maxsize=1)
def machine_table() -> MachineTable:
    """The table, read from ``providers/vertex.yaml`` and checked (a malformed table is a bug
    in the shipped data file: ValueError naming the entry)."""
    from . import prose
    data = prose("vertex").get("instances")
    where = "providers/vertex.yaml: instances"
    try:
        gpu = {str(kind).upper(): (str(row["accelerator"]),
                                   {int(n): str(m) for n, m in row["machines"].items()})
               for kind, row in data["gpu"].items()}
        cpu = tuple((str(row["type"]), float(row["cpu"]), float(row["memory_gib"]))
                    for row in data["cpu"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
    for kind, (accelerator, machines) in gpu.items():
        if not accelerator.startswith("NVIDIA_") or not machines or min(machines) < 1:
            raise ValueError(f"{where}.gpu.{kind}: an NVIDIA_* accelerator with machines for 1 "
                             "or more GPUs")
    if list(cpu) != sorted(cpu, key=lambda row: (row[1], row[2])):
        raise ValueError(f"{where}.cpu: list the types from the smallest up")
    return MachineTable(gpu, cpu)


def machine_for(cpu: float, memory_gib: float, gpu_type: str | None,
                gpu_count: int = 1) -> tuple[str, str | None, int] | None:
    """(machine type, accelerator type or None, accelerator count) for ``resources``, or None
    when nothing in the table fits (the adapter then asks for ``machine_type``)."""
    table = machine_table()
    if gpu_type is not None:
        accelerator, machines = table.gpu.get(gpu_type.upper(), (None, {}))
        count = next((n for n in sorted(machines) if n >= gpu_count), None)
        return (machines[count], accelerator, count) if accelerator and count else None
    return next(((name, None, 0) for name, cores, gib in table.cpu
                 if cores >= cpu and gib >= memory_gib), None)


def accelerator_for(gpu_type: str) -> str | None:
    """Vertex's accelerator type for ``resources.gpu.type`` (T4 -> NVIDIA_TESLA_T4), or None."""
    found = machine_table().gpu.get(gpu_type.upper())
    return found[0] if found else None
