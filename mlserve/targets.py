"""Per-provider target options: one pydantic model per provider, discriminated on ``provider``.

Each model documents every field (description + example) because `mlserve schema` exports them
for editors. Options that belong to a provider live here and nowhere else; the manifest only
knows the union, ``Target``, built from the provider registry (``mlserve.providers``): a provider
is in the union, hence in the JSON Schema, exactly when it is registered.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator

from .strict import DOCKER_HOST_RE, IMAGE_REPOSITORY_RE, Strict, shown

# Checked with fullmatch: `$` with re.match would let a trailing newline through.
_HOST_RE = re.compile(r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                      r"(?::(?P<port>\d{1,5}))?")
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f:.]+|[A-Za-z0-9.-]+")     # an IP address or a host name


def _address(value: str) -> str:
    if not _ADDRESS_RE.fullmatch(value):
        raise ValueError(f"{shown(value)} is not an IP address or a host name")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]


class TargetBase(Strict):
    health_timeout: float = Field(
        120.0, gt=0, le=3600,
        description="Seconds to wait for a new release to load and answer /health before the "
                    "deploy fails (and the previous release keeps serving).",
        examples=[120])


class LocalTarget(TargetBase):
    """This machine: a release directory, a venv and a background process (the embedded default)."""

    provider: Literal["local"] = Field(description="Serve on this machine.", examples=["local"])
    port: Port = Field(8080, description="Loopback port the model answers on.", examples=[8080])
    host: Annotated[str, AfterValidator(_address)] = Field("127.0.0.1", description="Address to listen on. Keep loopback unless the "
                      "machine is meant to be reached from others.", examples=["127.0.0.1"])
    keep_releases: int = Field(5, ge=1, le=100, description="Old releases kept for rollback.",
                               examples=[5])


class SSHTarget(TargetBase):
    """Any Linux host reached over SSH (bare metal, GPU clouds that hand out boxes, your server)."""

    provider: Literal["ssh"] = Field(description="Deploy over SSH.", examples=["ssh"])
    hosts: list[str] = Field(min_length=1, description="`user@host[:port]`, one or many (a fleet).",
                             examples=[["ubuntu@203.0.113.7", "ubuntu@gpu-2.example.com:2222"]])
    identity_file: str | None = Field(None, description="Private key; the ssh-agent when absent.",
                                      examples=["~/.ssh/id_ed25519"])
    known_hosts: str = Field("~/.ssh/known_hosts", description="Host keys checked strictly: an "
                             "unknown or changed host key is refused (add a host with "
                             "`ssh-keyscan -p PORT HOST >> FILE` after checking its fingerprint).",
                             examples=["~/.ssh/known_hosts"])
    accept_new_host_keys: bool = Field(False, description="Explicit opt-in to trust a host seen "
                                       "for the first time and record its key (like OpenSSH's "
                                       "accept-new). A changed key is always refused.", examples=[False])
    jump_host: str | None = Field(None, description="Bastion `user@host[:port]` to go through.",
                                  examples=["ubuntu@bastion.example.com"])
    base_dir: str = Field("~/.mlserve", description="Remote directory mlserve owns (content-"
                          "addressed files, releases, venvs, logs); nothing outside it is touched, "
                          "and `mlserve delete` removes what this deployment put there.",
                          examples=["/opt/mlserve"])
    port: Port = Field(8080, description="Port the model answers on, on each host.", examples=[8080])
    bind: Annotated[str, AfterValidator(_address)] = Field("0.0.0.0", description="Address the model listens on, on each host.",
                      examples=["0.0.0.0"])
    python: str = Field("python3", description="Interpreter on the host (a name on its PATH or a "
                        "path), Python >= 3.10: it runs mlserve's helper and the model, and builds "
                        "the model's venv when it has requirements.", examples=["python3"])
    keep_releases: int = Field(5, ge=1, le=100, description="Releases kept on each host for "
                               "rollback.", examples=[5])
    max_parallel: int = Field(4, ge=1, le=256, description="Hosts worked on at once (upload, "
                              "start and check).", examples=[4])
    max_unavailable: int = Field(1, ge=1, description="Hosts switching to the new release at once "
                                 "during a rolling deploy; every host's new release is started "
                                 "and checked beside the old one before any host switches.",
                                 examples=[1])
    connect_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to wait for SSH.",
                                   examples=[10])

    @field_validator("hosts", "jump_host")
    @classmethod
    def _check_hosts(cls, value):
        for host in [value] if isinstance(value, str) else (value or []):
            match = _HOST_RE.fullmatch(host)
            if not match:
                raise ValueError(f"{shown(host)} is not user@host[:port]")
            port = match.group("port")
            if port and not 1 <= int(port) <= 65535:
                raise ValueError(f"{shown(host)}: port must be 1-65535")
        return value



class DockerTarget(TargetBase):
    """A container image (the generic package for SageMaker, Vertex AI, Azure ML, Runpod, k8s)."""

    provider: Literal["docker"] = Field(description="Build a container image.", examples=["docker"])
    image: str = Field(pattern=IMAGE_REPOSITORY_RE, max_length=255,
                       description="Image repository to build and push (no tag: the release id "
                       "is the tag).", examples=["registry.example.com/team/hello"])
    base_image: str | None = Field(None, description="Base image; a slim Python image by default, "
                                   "a CUDA image when a GPU is requested.",
                                   examples=["python:3.11-slim"])
    port: Port = Field(8080, description="Port the container serves on.", examples=[8080])
    push: bool = Field(True, description="Push to the registry after building.", examples=[True])
    platform: Literal["linux/amd64", "linux/arm64"] = Field(
        "linux/amd64", description="Platform the image runs on: the runtime's compiled "
        "dependencies are fetched as wheels for it.", examples=["linux/arm64"])
    host: str | None = Field(None, pattern=DOCKER_HOST_RE,
                             description="Docker engine `mlserve deploy` runs the container on "
                             "(unix://, tcp:// or ssh://); DOCKER_HOST or the local socket when "
                             "absent.", examples=["ssh://ubuntu@203.0.113.7"])
    restart: Literal["unless-stopped", "on-failure", "always"] = Field(
        "unless-stopped", description="Restart policy of the deployed container.",
        examples=["on-failure"])


class ReplicateTarget(TargetBase):
    """Replicate: packaged with Cog."""

    provider: Literal["replicate"] = Field(description="Deploy to Replicate.", examples=["replicate"])
    model: str = Field(pattern=r"^[a-z0-9_.-]+/[a-z0-9_.-]+$",
                       description="Replicate model `owner/name`.", examples=["acme/hello"])
    hardware: str | None = Field(None, description="Replicate hardware SKU.", examples=["gpu-a40-small"])


class BasetenTarget(TargetBase):
    """Baseten: packaged with Truss."""

    provider: Literal["baseten"] = Field(description="Deploy to Baseten.", examples=["baseten"])
    model_name: str | None = Field(None, description="Baseten model name (default: the manifest name).",
                                   examples=["hello"])


class VMTarget(TargetBase):
    """A managed cloud VM booted with cloud-init user-data (AWS EC2, GCP, Azure)."""

    provider: Literal["vm"] = Field(description="Boot a VM with cloud-init.", examples=["vm"])
    port: Port = Field(8080, description="Port the model serves on, on the VM.", examples=[8080])
    user: str = Field("mlserve", pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
                      description="Service user created on the VM.", examples=["mlserve"])
    bundle_url: str | None = Field(None, description="Where the VM fetches the bundle (an https or "
                                   "s3 URL); embedded in the user-data when absent.",
                                   examples=["https://example.com/bundles/hello.tar.gz"])


_ROLE_RE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
_INSTANCE_TYPE_RE = re.compile(r"ml\.[a-z0-9]{2,12}\.[0-9]{0,2}x?(?:large|medium|small|xlarge)")
_ENDPOINT_NAME_RE = re.compile(r"[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,49}")


def _matching(pattern: re.Pattern, what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{shown(value)} is not {what}")
        return value
    return AfterValidator(check)


class SageMakerServerless(Strict):
    """SageMaker Serverless Inference: scales to zero, CPU only, no autoscaling policy to set."""

    memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(
        2048, description="Memory of each serverless instance (SageMaker's MemorySizeInMB).",
        examples=[2048])
    max_concurrency: int = Field(
        5, ge=1, le=200, description="Invocations served at once across the endpoint "
        "(MaxConcurrency); SageMaker throttles beyond it.", examples=[5])


class SageMakerTarget(TargetBase):
    """An AWS SageMaker real-time endpoint (or Serverless Inference) running the release's image."""

    provider: Literal["sagemaker"] = Field(description="Deploy to an AWS SageMaker endpoint.",
                                           examples=["sagemaker"])
    role: Annotated[str, _matching(_ROLE_RE, "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")] \
        = Field(description="Execution role SageMaker assumes to pull the image from ECR and "
                "write CloudWatch logs.",
                examples=["arn:aws:iam::123456789012:role/SageMakerExecution"])
    region: Annotated[str, _matching(_REGION_RE, "an AWS region (us-east-1)")] | None = Field(
        None, description="AWS region; AWS_REGION, AWS_DEFAULT_REGION or the profile's when absent.",
        examples=["us-east-1"])
    repository: str = Field(
        pattern=IMAGE_REPOSITORY_RE, max_length=255,
        description="ECR repository the image is pushed to (no tag: the release id is the tag).",
        examples=["123456789012.dkr.ecr.us-east-1.amazonaws.com/hello"])
    instance_type: Annotated[str, _matching(_INSTANCE_TYPE_RE, "a SageMaker instance type "
                                            "(ml.m5.large)")] | None = Field(
        None, description="Instance type of the production variant; from `resources` when absent "
        "(a GPU request picks that GPU's instance family).", examples=["ml.g5.xlarge"])
    serverless: SageMakerServerless | None = Field(
        None, description="Deploy to Serverless Inference instead of instances (CPU only; scales "
        "to zero).", examples=[{"memory_mb": 2048, "max_concurrency": 5}])
    endpoint_name: Annotated[str, _matching(_ENDPOINT_NAME_RE, "an endpoint name (letters, digits "
                                            "and dashes, at most 50)")] | None = Field(
        None, description="Endpoint name; `NAME-TARGET` from the manifest when absent.",
        examples=["hello-prod"])
    deployment: Literal["all-at-once", "canary"] = Field(
        "all-at-once", description="How an update shifts traffic to the new fleet (blue/green, "
        "rolled back automatically when it fails): all at once, or 10% first.",
        examples=["canary"])
    canary_wait: int = Field(
        300, ge=0, le=3600, description="With `deployment: canary`: seconds the new fleet takes "
        "10% of the traffic before it takes the rest (SageMaker's WaitIntervalInSeconds).",
        examples=[300])
    rollback_alarms: list[Annotated[str, Field(min_length=1, max_length=255,
                                               pattern=r"^[^\x00-\x1f\x7f]+$")]] = Field(
        [], max_length=10, description="CloudWatch alarms that roll an update back when one fires "
        "during it (SageMaker's AutoRollbackConfiguration); a new fleet that fails its health "
        "checks is rolled back without them.", examples=[["hello-5xx"]])
    secrets: Literal["refuse", "environment"] = Field(
        "refuse", description="SageMaker has no secret references: `environment` passes the "
        "manifest's secrets as the model's environment, readable by anyone who can describe the "
        "model; `refuse` refuses a manifest with secrets.", examples=["environment"])
    base_image: str | None = Field(None, description="Base image of the built image; a slim "
                                   "Python image by default, a CUDA image when a GPU is requested.",
                                   examples=["python:3.11-slim"])
    health_timeout: float = Field(
        1800.0, gt=0, le=7200,
        description="Seconds to wait for the endpoint to reach InService (SageMaker takes "
                    "minutes) before the deploy fails and the previous release keeps serving.",
        examples=[1800])


_GCP_PROJECT_RE = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_GCP_REGION_RE = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
_MACHINE_TYPE_RE = re.compile(r"[a-z][a-z0-9]{1,5}-[a-z]+-[0-9]{1,3}[a-z]?")
_ACCELERATOR_RE = re.compile(r"NVIDIA_[A-Z0-9_]{2,30}|TPU_[A-Z0-9_]{2,20}")
_VERTEX_ENDPOINT_ID_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: https://HOST[:PORT], or http:// to a loopback address only (a local emulator): credentials
#: never travel in clear over a network.
_API_ENDPOINT_RE = re.compile(r"(?:https://[A-Za-z0-9.-]+|http://(?:127\.[0-9.]+|localhost))"
                              r"(?::[0-9]{1,5})?")


class VertexTarget(TargetBase):
    """A Google Vertex AI online prediction endpoint running the release's image."""

    provider: Literal["vertex"] = Field(description="Deploy to a Vertex AI endpoint.",
                                        examples=["vertex"])
    project: Annotated[str, _matching(_GCP_PROJECT_RE, "a Google Cloud project ID")] | None = \
        Field(None, description="Google Cloud project ID; the Application Default Credentials' "
              "project (or GOOGLE_CLOUD_PROJECT) when absent.", examples=["my-project"])
    region: Annotated[str, _matching(_GCP_REGION_RE, "a Google Cloud region (us-central1)")] = \
        Field("us-central1", description="Vertex AI region of the model and endpoint.",
              examples=["europe-west4"])
    repository: str = Field(
        pattern=IMAGE_REPOSITORY_RE, max_length=255,
        description="Artifact Registry repository the image is pushed to (no tag: the release "
                    "id is the tag).",
        examples=["us-central1-docker.pkg.dev/my-project/models/hello"])
    machine_type: Annotated[str, _matching(_MACHINE_TYPE_RE, "a machine type (n1-standard-4)")] \
        | None = Field(None, description="Machine type of each replica; from `resources` when "
                       "absent (a GPU request picks a machine for that accelerator).",
                       examples=["n1-standard-4"])
    accelerator: Annotated[str, _matching(_ACCELERATOR_RE, "a Vertex accelerator type "
                                          "(NVIDIA_TESLA_T4)")] | None = Field(
        None, description="Vertex accelerator type; from `resources.gpu` when absent "
        "(providers/vertex.yaml maps T4 to NVIDIA_TESLA_T4...).", examples=["NVIDIA_L4"])
    endpoint: Annotated[str, _matching(_VERTEX_ENDPOINT_ID_RE, "an endpoint ID (lowercase "
                                       "letters, digits and dashes, at most 63, starting with "
                                       "a letter)")] | None = Field(
        None, description="Endpoint ID, created when missing and reused when there; "
        "`name-target` from the manifest when absent.", examples=["hello-prod"])
    api_endpoint: Annotated[str, _matching(_API_ENDPOINT_RE, "https://HOST[:PORT] (http:// "
                                           "only to a loopback address)")] | None = Field(
        None, description="Vertex AI API endpoint; https://REGION-aiplatform.googleapis.com "
        "when absent (set it for Private Service Connect or a local emulator).",
        examples=["https://us-central1-aiplatform.googleapis.com"])
    logging_endpoint: Annotated[str, _matching(_API_ENDPOINT_RE, "https://HOST[:PORT] (http:// "
                                               "only to a loopback address)")] | None = Field(
        None, description="Cloud Logging API endpoint `mlserve logs` reads from; "
        "https://logging.googleapis.com when absent.", examples=["https://logging.googleapis.com"])
    secrets: Literal["refuse", "environment"] = Field(
        "refuse", description="Vertex AI has no secret references in a model's environment: "
        "`environment` passes the manifest's secrets as the container's environment, readable "
        "by anyone who can get the model; `refuse` refuses a manifest with secrets.",
        examples=["environment"])
    base_image: str | None = Field(None, description="Base image of the built image; a slim "
                                   "Python image by default, a CUDA image when a GPU is requested.",
                                   examples=["python:3.11-slim"])
    health_timeout: float = Field(
        1800.0, gt=0, le=7200,
        description="Seconds to wait for each long operation (Vertex AI takes minutes to deploy "
                    "a model) before the deploy fails and the previous release keeps serving.",
        examples=[1800])


_AZURE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.()-]{0,88}[A-Za-z0-9_()-]|[A-Za-z0-9]")
_AZURE_SUBSCRIPTION_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_AZURE_WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}")
_AZURE_ENDPOINT_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{1,30})[A-Za-z0-9]")
_AZURE_SKU_RE = re.compile(r"Standard_[A-Za-z0-9_]{2,40}")
_REGISTRY_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?")
_REPOSITORY_PATH_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")


class AzureMLTarget(TargetBase):
    """An Azure Machine Learning managed online endpoint running the release's image."""

    provider: Literal["azureml"] = Field(description="Deploy to an Azure ML managed online "
                                         "endpoint.", examples=["azureml"])
    subscription_id: Annotated[str, _matching(_AZURE_SUBSCRIPTION_RE, "an Azure subscription id "
                                              "(a GUID)")] | None = Field(
        None, description="Azure subscription of the workspace; AZURE_SUBSCRIPTION_ID when absent.",
        examples=["00000000-0000-0000-0000-000000000000"])
    resource_group: Annotated[str, _matching(_AZURE_NAME_RE, "a resource group name")] = Field(
        description="Resource group of the workspace.", examples=["ml-prod"])
    workspace: Annotated[str, _matching(_AZURE_WORKSPACE_RE, "a workspace name (3-33 letters, "
                                        "digits, - and _)")] = Field(
        description="Azure Machine Learning workspace the endpoint lives in.",
        examples=["ml-prod-ws"])
    registry: Annotated[str, _matching(_REGISTRY_RE, "a registry login server (HOST[:PORT])")] = \
        Field(description="Azure Container Registry login server the image is pushed to (the "
              "workspace must be allowed to pull from it).", examples=["myacr.azurecr.io"])
    repository: Annotated[str, _matching(_REPOSITORY_PATH_RE, "a repository path (lower case)")] \
        | None = Field(None, description="Repository in the registry; the manifest's name when "
                       "absent. The release id is the tag.", examples=["hello"])
    instance_type: Annotated[str, _matching(_AZURE_SKU_RE, "an Azure VM SKU (Standard_DS3_v2)")] \
        | None = Field(None, description="VM SKU of the deployment's instances; from `resources` "
                       "when absent (a GPU request picks that GPU's SKU).",
                       examples=["Standard_NC4as_T4_v3"])
    endpoint: Annotated[str, _matching(_AZURE_ENDPOINT_RE, "an endpoint name (3-32 letters, "
                                       "digits and dashes, starting with a letter)")] | None = \
        Field(None, description="Endpoint name (unique in the Azure region); `NAME-TARGET` from "
              "the manifest when absent.", examples=["hello-prod"])
    secrets: Literal["refuse", "environment"] = Field(
        "refuse", description="`environment` passes the manifest's secrets as the deployment's "
        "environment variables, readable by anyone who can read the deployment; `refuse` "
        "refuses a manifest with secrets.", examples=["environment"])
    base_image: str | None = Field(None, description="Base image of the built image; a slim "
                                   "Python image by default, a CUDA image when a GPU is requested.",
                                   examples=["python:3.11-slim"])
    health_timeout: float = Field(
        1800.0, gt=0, le=7200,
        description="Seconds to wait for a deployment to succeed (Azure takes minutes) before "
                    "the deploy fails and the previous release keeps serving.",
        examples=[1800])

    def image_repository(self, project_name: str) -> str:
        """``REGISTRY/REPOSITORY`` the release's image is pushed to (the tag is the release)."""
        default = re.sub(r"[^a-z0-9]+", "-", project_name.lower()).strip("-") or "model"
        return f"{self.registry}/{self.repository or default}"


def _options_models() -> tuple[type[TargetBase], ...]:
    """Each registered provider's options model, in registry order; each is defined above (the
    registry names them as "mlserve.targets:Class"), and its ``provider`` is the provider's name."""
    from .providers import REGISTRY
    models = []
    for name, info in REGISTRY.items():
        module, _, cls_name = info.options.partition(":")
        model = globals().get(cls_name) if module == __name__ else None
        if model is None or model.model_fields["provider"].annotation != Literal[name]:
            raise RuntimeError(f"provider {name!r}: its options {info.options!r} are not a target "
                               f"model in {__name__} with provider: Literal[{name!r}]")
        models.append(model)
    return tuple(models)


#: The manifest's ``targets`` values: one options model per registered provider.
Target = Annotated[Union[_options_models()], Field(discriminator="provider")]
