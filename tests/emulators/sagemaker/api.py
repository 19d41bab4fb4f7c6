"""SageMaker's control-plane operations that mlserve makes, from the API reference: models,
endpoint configurations, endpoints (see ``endpoints``), tags and the list calls with their
filters; and the runtime's InvokeEndpoint. Requests are validated against botocore's service
model first (``validate``), as SageMaker's front end does.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from . import catalog
from .endpoints import IN_PROGRESS, Endpoint, Lifecycle, check_deletable
from .errors import ApiError, not_found, validation
from .faults import Faults
from .fleet import Docker, split_reference

ACCOUNT = "123456789012"
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
_KINDS = {"model": "model", "endpoint-config": "endpoint configuration", "endpoint": "endpoint"}


class Store:
    """The emulator's state. ``region`` is the region ARNs are made in."""

    def __init__(self, docker: Docker, region: str, ecr_registry: str | None,
                 startup_timeout: float, cloudwatch: Any = None, autoscaling: Any = None,
                 iam: Any = None) -> None:
        self.lock = threading.RLock()
        self.region = region
        self.ecr_registry = ecr_registry
        self.cloudwatch = cloudwatch            # boto3 clients against moto, or None
        self.autoscaling = autoscaling
        self.iam = iam
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.tags: dict[str, list[dict]] = {}
        self.faults = Faults()
        self.calls: list[dict] = []
        self.docker = docker
        self.lifecycle = Lifecycle(self, docker, startup_timeout, self.resolve_image)

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name.lower()}"

    def resolve_image(self, image: str) -> str:
        """Where the engine pulls ``image`` from: an ECR URL maps to the registry standing in for
        ECR (``--ecr-registry``), any other reference is pulled as it is."""
        if self.ecr_registry and ECR_HOST.match(image):
            return ECR_HOST.sub(self.ecr_registry.rstrip("/") + "/", image)
        return image

    def image_exists(self, image: str) -> bool | None:
        """Whether the registry has ``image`` (None: the registry cannot say, e.g. it wants
        credentials)."""
        ref = self.resolve_image(image)
        host, _, path = ref.partition("/")
        if "." not in host and ":" not in host and host != "localhost":
            return None                      # a Docker Hub name: nothing to ask here
        repository, tag = split_reference(path)
        request = urllib.request.Request(
            f"http://{host}/v2/{repository}/manifests/{tag}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                               "application/vnd.oci.image.manifest.v1+json, "
                               "application/vnd.docker.distribution.manifest.list.v2+json"})
        try:
            with urllib.request.urlopen(request, timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            return False if exc.code == 404 else None
        except OSError:
            return None

    def alarms_firing(self, names: list[str]) -> list[str]:
        if not names or self.cloudwatch is None:
            return []
        try:
            found = self.cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]
        except Exception:
            return []
        return [a["AlarmName"] for a in found if a.get("StateValue") == "ALARM"]

    def role_assumable(self, arn: str) -> bool:
        """Whether the IAM role (in moto) exists and trusts sagemaker.amazonaws.com, which
        SageMaker checks when CreateModel names it."""
        if self.iam is None:
            return True
        try:
            role = self.iam.get_role(RoleName=arn.rsplit("/", 1)[-1])["Role"]
        except self.iam.exceptions.NoSuchEntityException:
            return False
        document = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(document, str):
            import json
            import urllib.parse
            document = json.loads(urllib.parse.unquote(document))
        for statement in _listed(document.get("Statement")):
            services = _listed((statement.get("Principal") or {}).get("Service"))
            actions = _listed(statement.get("Action"))
            if statement.get("Effect") == "Allow" and "sagemaker.amazonaws.com" in services \
                    and ("sts:AssumeRole" in actions or "sts:*" in actions):
                return True
        return False

    def scaled_variants(self, endpoint: str) -> list[str]:
        """Variants of ``endpoint`` registered as Application Auto Scaling targets (in moto)."""
        if self.autoscaling is None:
            return []
        found = self.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")
        prefix = f"endpoint/{endpoint}/variant/"
        return [t["ResourceId"][len(prefix):] for t in found["ScalableTargets"]
                if t["ResourceId"].startswith(prefix)]

    def deregister_scaling(self, endpoint: str) -> None:
        """What SageMaker has Application Auto Scaling do when an endpoint is deleted: its
        variants' scaling policies and scalable targets go too."""
        for variant in self.scaled_variants(endpoint):
            resource = f"endpoint/{endpoint}/variant/{variant}"
            dimension = "sagemaker:variant:DesiredInstanceCount"
            policies = self.autoscaling.describe_scaling_policies(
                ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
            for policy in policies:
                self.autoscaling.delete_scaling_policy(
                    PolicyName=policy["PolicyName"], ServiceNamespace="sagemaker",
                    ResourceId=resource, ScalableDimension=dimension)
            self.autoscaling.deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension)

    def reset(self) -> None:
        with self.lock:
            endpoints = list(self.endpoints.values())
            self.models.clear(), self.configs.clear(), self.endpoints.clear()
            self.tags.clear(), self.calls.clear()
            self.faults = Faults()
        for endpoint in endpoints:
            endpoint.cancelled.set()
        self.docker.remove_all()
        self.docker.forget_groups()


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


# -- handlers ---------------------------------------------------------------------------------

def _tags_in(store: Store, arn: str, tags: list[dict] | None) -> None:
    if tags:
        store.tags[arn] = list(tags)


def create_model(store: Store, p: dict) -> dict:
    name = p["ModelName"]
    arn = store.arn("model", name)
    if name in store.models:
        raise validation(f'Cannot create already existing model "{arn}".')
    containers = [p["PrimaryContainer"]] if p.get("PrimaryContainer") else p.get("Containers") or []
    if not containers:
        raise validation("Either PrimaryContainer or Containers must be specified.")
    role = p.get("ExecutionRoleArn")
    if role and not store.role_assumable(role):
        raise validation(f"Could not assume role {role}. Please ensure that the role exists and "
                         "allows principal 'sagemaker.amazonaws.com' to assume the role.")
    for container in containers:
        image = container.get("Image")
        if not image:
            raise validation("Image must be specified for the container.")
        if store.image_exists(image) is False:
            raise validation(f"Requested image {image} not found.")
    store.models[name] = {**p, "ModelArn": arn, "CreationTime": time.time()}
    _tags_in(store, arn, p.get("Tags"))
    return {"ModelArn": arn}


def describe_model(store: Store, p: dict) -> dict:
    model = store.models.get(p["ModelName"])
    if model is None:
        raise not_found("model", store.arn("model", p["ModelName"]))
    return {k: v for k, v in model.items() if k != "Tags"}


def delete_model(store: Store, p: dict) -> dict:
    if store.models.pop(p["ModelName"], None) is None:
        raise not_found("model", store.arn("model", p["ModelName"]))
    store.tags.pop(store.arn("model", p["ModelName"]), None)
    return {}


def _check_variant(store: Store, variant: dict) -> None:
    serverless = variant.get("ServerlessConfig")
    name = variant["VariantName"]
    if serverless and (variant.get("InstanceType") or variant.get("InitialInstanceCount")):
        raise validation(f"Production variant {name} cannot have both ServerlessConfig and "
                         "InstanceType/InitialInstanceCount.")
    if not serverless and not (variant.get("InstanceType") and variant.get("InitialInstanceCount")):
        raise validation(f"Production variant {name} must specify InstanceType and "
                         "InitialInstanceCount, or ServerlessConfig.")
    if serverless and serverless["MemorySizeInMB"] % 1024:
        raise validation(f"Value '{serverless['MemorySizeInMB']}' at 'memorySizeInMB' failed to "
                         "satisfy constraint: Member must be one of [1024, 2048, 3072, 4096, "
                         "5120, 6144]")
    if variant["ModelName"] not in store.models:
        raise not_found("model", store.arn("model", variant["ModelName"]))


def create_endpoint_config(store: Store, p: dict) -> dict:
    name = p["EndpointConfigName"]
    arn = store.arn("endpoint-config", name)
    if name in store.configs:
        raise validation(f'Cannot create already existing endpoint configuration "{arn}".')
    names = [v["VariantName"] for v in p["ProductionVariants"]]
    if len(set(names)) != len(names):
        raise validation("Production variant names must be unique.")
    for variant in p["ProductionVariants"]:
        _check_variant(store, variant)
    store.configs[name] = {**p, "EndpointConfigArn": arn, "CreationTime": time.time()}
    _tags_in(store, arn, p.get("Tags"))
    return {"EndpointConfigArn": arn}


def describe_endpoint_config(store: Store, p: dict) -> dict:
    config = store.configs.get(p["EndpointConfigName"])
    if config is None:
        raise not_found("endpoint configuration",
                        store.arn("endpoint-config", p["EndpointConfigName"]))
    return {k: v for k, v in config.items() if k != "Tags"}


def delete_endpoint_config(store: Store, p: dict) -> dict:
    name = p["EndpointConfigName"]
    if store.configs.pop(name, None) is None:
        raise not_found("endpoint configuration", store.arn("endpoint-config", name))
    store.tags.pop(store.arn("endpoint-config", name), None)
    return {}


def _instances_in_use(store: Store) -> dict[str, int]:
    used: dict[str, int] = {}
    for endpoint in store.endpoints.values():
        names = [endpoint.config_name] + ([endpoint.pending_config] if endpoint.pending_config else [])
        for name in names:
            for variant in store.configs.get(name, {}).get("ProductionVariants", []):
                if variant.get("InstanceType"):
                    used[variant["InstanceType"]] = used.get(variant["InstanceType"], 0) + \
                        int(variant.get("InitialInstanceCount", 0))
    return used


def _check_quota(store: Store, config: dict) -> None:
    used = _instances_in_use(store)
    for variant in config["ProductionVariants"]:
        kind = variant.get("InstanceType")
        if not kind or kind not in store.faults.quotas:
            continue
        limit, delta = store.faults.quotas[kind], int(variant.get("InitialInstanceCount", 1))
        if used.get(kind, 0) + delta > limit:
            raise ApiError(
                "ResourceLimitExceeded",
                f"The account-level service limit '{kind} for endpoint usage' is {limit} "
                f"Instances, with current utilization of {used.get(kind, 0)} Instances and a "
                f"request delta of {delta} Instances. Please use AWS Service Quotas to request "
                "an increase for this quota. If AWS Service Quotas is not available, contact "
                "AWS support to request an increase for this quota.")


def _config_for(store: Store, name: str) -> dict:
    config = store.configs.get(name)
    if config is None:
        raise not_found("endpoint configuration", store.arn("endpoint-config", name))
    return config


def create_endpoint(store: Store, p: dict) -> dict:
    name = p["EndpointName"]
    arn = store.arn("endpoint", name)
    if name in store.endpoints:
        raise validation(f'Cannot create already existing endpoint "{arn}".')
    _check_quota(store, _config_for(store, p["EndpointConfigName"]))
    endpoint = Endpoint(name, arn, p["EndpointConfigName"])
    store.endpoints[name] = endpoint
    _tags_in(store, arn, p.get("Tags"))
    store.lifecycle.create(endpoint)
    return {"EndpointArn": arn}


def _endpoint(store: Store, name: str) -> Endpoint:
    endpoint = store.endpoints.get(name)
    if endpoint is None:
        raise not_found("endpoint", store.arn("endpoint", name))
    return endpoint


def describe_endpoint(store: Store, p: dict) -> dict:
    return _endpoint(store, p["EndpointName"]).describe(store.configs)


def update_endpoint(store: Store, p: dict) -> dict:
    endpoint = _endpoint(store, p["EndpointName"])
    if endpoint.status in IN_PROGRESS:
        raise validation(f'Cannot update in-progress endpoint "{endpoint.arn}".')
    if endpoint.status == "Failed":
        raise validation(f'Cannot update failed endpoint "{endpoint.arn}". Delete it and '
                         "create it again.")
    config = _config_for(store, p["EndpointConfigName"])
    if p["EndpointConfigName"] == endpoint.config_name and not p.get("RetainAllVariantProperties"):
        raise validation("Cannot update endpoint with the same endpoint configuration "
                         f'"{p["EndpointConfigName"]}". Use a different endpoint configuration.')
    if (p.get("DeploymentConfig") or {}).get("RollingUpdatePolicy"):
        raise validation("RollingUpdatePolicy is not modelled by this emulator (see its README).")
    _check_scaled_variants(store, endpoint, config)
    _check_quota(store, config)
    store.lifecycle.update(endpoint, p["EndpointConfigName"], p.get("DeploymentConfig"))
    return {"EndpointArn": endpoint.arn}


def _check_scaled_variants(store: Store, endpoint: Endpoint, config: dict) -> None:
    """SageMaker refuses an update that changes the instance type of, or removes, a variant
    registered for auto scaling (the model may change): "Update endpoints that use auto
    scaling" in the developer guide. The wording here is the emulator's."""
    current = {v["VariantName"]: v for v in
               store.configs.get(endpoint.config_name, {}).get("ProductionVariants", [])}
    new = {v["VariantName"]: v for v in config["ProductionVariants"]}
    for variant in store.scaled_variants(endpoint.name):
        before, after = current.get(variant, {}), new.get(variant)
        if after is None or after.get("InstanceType") != before.get("InstanceType"):
            raise validation(
                f"The variant {variant} of endpoint {endpoint.name} is registered with "
                "Application Auto Scaling; an update may not remove it or change its instance "
                "type. Delete its scaling policies and call DeregisterScalableTarget first.")


def delete_endpoint(store: Store, p: dict) -> dict:
    endpoint = _endpoint(store, p["EndpointName"])
    check_deletable(endpoint)
    store.deregister_scaling(endpoint.name)
    store.tags.pop(endpoint.arn, None)
    store.lifecycle.delete(endpoint)
    return {}


OPERATIONS: dict[str, Callable[[Store, dict], dict]] = {
    "CreateModel": create_model, "DescribeModel": describe_model, "DeleteModel": delete_model,
    "CreateEndpointConfig": create_endpoint_config,
    "DescribeEndpointConfig": describe_endpoint_config,
    "DeleteEndpointConfig": delete_endpoint_config,
    "CreateEndpoint": create_endpoint, "DescribeEndpoint": describe_endpoint,
    "UpdateEndpoint": update_endpoint, "DeleteEndpoint": delete_endpoint,
    "ListTags": catalog.list_tags, "AddTags": catalog.add_tags,
    "DeleteTags": catalog.delete_tags, "ListModels": catalog.list_models,
    "ListEndpointConfigs": catalog.list_endpoint_configs,
    "ListEndpoints": catalog.list_endpoints,
}
