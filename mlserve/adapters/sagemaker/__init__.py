"""The ``sagemaker`` target: the release's image served by an AWS SageMaker endpoint.

Names and identity. The endpoint is the target's ``endpoint_name``, else ``NAME-TARGET``. Each
release gets one model and one endpoint config of the same name, ``ENDPOINT-RELEASE-HASH``
(``HASH``: six hex digits of what the config holds: image, instance type or serverless sizes,
count, environment names), so a redeploy of what serves is recognised by name, and a rollback
finds the config it left. Everything carries the tags ``mlserve:deployment`` (``name.target``)
and ``mlserve:release``; ``delete`` finds models and configs by name prefix and those tags,
never by the journal.

``observe`` (read only: DescribeEndpoint, and only when there is no endpoint the list calls for
leftovers) maps EndpointStatus through the provider's ``STATE_MAP``. The serving release is read
from the endpoint's config name. Deploy, update, rollback: ``steps.SageMakerStep``.
``caller``: InvokeEndpoint (``{"input": X}`` -> ``{"output": ...}``, the runtime's
/invocations contract). ``logs``: CloudWatch Logs ``/aws/sagemaker/Endpoints/ENDPOINT``.

boto3 (the ``aws`` extra) is imported by ``api.Aws`` only, when a command uses this target.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from typing import Iterator

from ...errors import InvalidInput, MlserveError, ProviderError
from ...providers import info as provider_info
from ...vocab import Action, DeployState, Feature
from ..base import Call, Context, Observed, ReleaseSpec, Resource
from ..pushed_image import PushedImageAdapter
from ..pushed_image import instance_type as chosen_type
from .api import Aws

TAG_DEPLOYMENT = "mlserve:deployment"
TAG_RELEASE = "mlserve:release"
VARIANT = "AllTraffic"
#: ``ENDPOINT-RELEASE-HASH``: how a model or config name says its release.
_RESOURCE_RE = re.compile(r"-(r-[0-9a-f]{12})-[0-9a-f]{6}$")
#: Statuses in which the endpoint answers with the config it names (an update in progress
#: still serves the old one, which DescribeEndpoint names until the update is done).
ANSWERING = ("InService", "Updating", "SystemUpdating", "RollingBack")


def endpoint_name(ctx: Context) -> str:
    if ctx.target.endpoint_name:
        return ctx.target.endpoint_name
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{ctx.manifest.name}-{ctx.target_name}").strip("-")
    return name[:50].rstrip("-")


def release_of(resource_name: str | None) -> str | None:
    found = _RESOURCE_RE.search(resource_name or "")
    return found.group(1) if found else None


def tags(ctx: Context, release: str | None = None) -> list[dict]:
    found = [{"Key": TAG_DEPLOYMENT, "Value": ctx.identity}]
    return found + ([{"Key": TAG_RELEASE, "Value": release}] if release else [])


def instance_type(ctx: Context, snapshot: dict) -> str:
    """The target's ``instance_type``, else the one ``resources`` map to (provider table)."""
    from ...providers.sagemaker import instance_type_for
    return chosen_type(ctx, snapshot, instance_type_for, "SageMaker instance type", "ml.g5.xlarge")


def variant(ctx: Context, snapshot: dict, model: str) -> dict:
    """The production variant of a release's endpoint config."""
    out = {"VariantName": VARIANT, "ModelName": model}
    serverless = ctx.target.serverless
    if serverless is not None:
        out["ServerlessConfig"] = {"MemorySizeInMB": serverless.memory_mb,
                                   "MaxConcurrency": serverless.max_concurrency}
        return out
    scaling = snapshot.get("scaling") or {}
    out.update(InstanceType=instance_type(ctx, snapshot),
               InitialInstanceCount=max(1, int(scaling.get("min_replicas", 1))),
               InitialVariantWeight=1.0)
    return out


def resource_name(ctx: Context, release: ReleaseSpec, image: str) -> str:
    """``ENDPOINT-RELEASE-HASH``, at most 63 characters (SageMaker's limit)."""
    shape = {"image": image, "variant": variant(ctx, release.snapshot, "-"),
             "env": sorted((release.snapshot.get("env") or {}).items()),
             "secrets": sorted(ctx.secrets) if ctx.target.secrets == "environment" else [],
             "role": ctx.target.role}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:6]
    return f"{endpoint_name(ctx)[:40].rstrip('-')}-{release.release_id}-{digest}"


def image_ref(ctx: Context, release_id: str) -> str:
    return f"{ctx.target.repository}:{release_id}"


class SageMakerAdapter(PushedImageAdapter):
    name = "sagemaker"

    def __init__(self) -> None:
        self.aws: Aws | None = None

    def session(self, ctx: Context) -> Aws:
        """One ``Aws`` per command (its clients and call count)."""
        if self.aws is None:
            self.aws = Aws(ctx.target.region, ctx.secrets)
        return self.aws

    def check(self, ctx: Context) -> None:
        """What the manifest asks that this target cannot do (exit 2), then boto3, region and
        credentials (exit 3)."""
        manifest, target = ctx.manifest, ctx.target
        where = f"targets.{ctx.target_name}"
        if manifest.secrets and target.secrets != "environment":
            raise InvalidInput(
                f"target {ctx.target_name!r} (sagemaker) cannot pass secrets "
                f"({', '.join(manifest.secrets)}): {provider_info('sagemaker').reason(Feature.SECRETS)}",
                where=f"{where}.secrets",
                fix="set `secrets: environment` on the target to pass them as the model's "
                    "environment (visible to anyone who can describe the model), or remove them")
        if target.serverless is not None and manifest.resources.gpu is not None:
            raise InvalidInput("SageMaker Serverless Inference has no GPUs",
                               where=f"{where}.serverless",
                               fix="remove serverless from the target, or resources.gpu")
        if target.serverless is None and manifest.scaling.min_replicas == 0:
            raise InvalidInput("a SageMaker instance endpoint keeps at least one instance",
                               where="scaling.min_replicas",
                               fix="set scaling.min_replicas: 1, or set `serverless` on the "
                                   "target (Serverless Inference scales to zero)")
        if target.serverless is None:
            instance_type(ctx, manifest.model_dump(mode="json"))
        self.session(ctx)

    # -- reading -----------------------------------------------------------------------------
    def describe(self, ctx: Context) -> dict | None:
        """DescribeEndpoint, or None when there is no such endpoint."""
        aws = self.session(ctx)
        try:
            return aws.call("sagemaker", "DescribeEndpoint", EndpointName=endpoint_name(ctx))
        except InvalidInput as exc:
            if "could not find" in exc.message.lower():
                return None
            raise

    def observe(self, ctx: Context) -> Observed:
        info = provider_info("sagemaker")
        try:
            aws = self.session(ctx)
            url = self._url(ctx, aws)
            found = self.describe(ctx)
        except MlserveError as exc:
            return Observed(DeployState.UNREACHABLE, None, None, [], exc.message)
        if found is None:
            leftovers = self.leftovers(ctx)
            return Observed(DeployState.NOT_DEPLOYED, None, url, leftovers,
                            "no endpoint" + (f"; {len(leftovers)} model(s) or config(s) left"
                                             if leftovers else ""))
        status = found.get("EndpointStatus", "")
        config = found.get("EndpointConfigName")
        release = release_of(config)
        state = info.state(status)
        answering = status in ANSWERING
        resources = [Resource("endpoint", found.get("EndpointArn", endpoint_name(ctx)), release,
                              state, answering, f"{status} {config}")]
        variants = [{"name": v.get("VariantName"), "status": _variant_status(v),
                     "instances": v.get("CurrentInstanceCount"),
                     "desired": v.get("DesiredInstanceCount")}
                    for v in found.get("ProductionVariants") or []]
        extra = {"endpoint": endpoint_name(ctx), "config": config, "status": status,
                 "region": aws.region, "variants": variants}
        if found.get("FailureReason"):
            extra["failure_reason"] = aws.blank(str(found["FailureReason"]))
        overall = DeployState.READY if status in ("Updating", "RollingBack") else state
        detail = f"endpoint {status}" + (f": {extra['failure_reason']}"
                                         if extra.get("failure_reason") else "")
        return Observed(overall, release if answering else None, url, resources, detail, extra)

    def leftovers(self, ctx: Context) -> list[Resource]:
        """Models and endpoint configs of this deployment (name prefix, then its tag)."""
        aws, prefix = self.session(ctx), endpoint_name(ctx)[:40].rstrip("-")
        found = []
        for kind, op, key, arn in (("endpoint-config", "ListEndpointConfigs", "EndpointConfigs",
                                    "EndpointConfigArn"), ("model", "ListModels", "Models",
                                                           "ModelArn")):
            token = None
            while True:
                page = aws.call("sagemaker", op, NameContains=prefix, MaxResults=100,
                                **({"NextToken": token} if token else {}))
                for item in page.get(key) or []:
                    name = item.get(key[:-1] + "Name")
                    if release_of(name) and _ours(aws, item.get(arn), ctx.identity):
                        found.append(Resource(kind, name, release_of(name), DeployState.PENDING,
                                              False, item.get(arn, "")))
                token = page.get("NextToken")
                if not token:
                    break
        return found

    @staticmethod
    def _url(ctx: Context, aws: Aws) -> str:
        base = aws.client("sagemaker-runtime").meta.endpoint_url.rstrip("/")
        return f"{base}/endpoints/{endpoint_name(ctx)}/invocations"

    @staticmethod
    def planned_calls(target, manifest, action: Action, live: dict) -> list[str]:
        """The calls a deploy would make (``mlserve plan``), in order; reads are marked."""
        reads = ["sagemaker:DescribeEndpoint (read)"]
        if action is Action.NONE:
            return reads
        calls = reads + ["docker build + push REPOSITORY:RELEASE (ECR GetAuthorizationToken "
                         "for an ECR repository)",
                         "sagemaker:DescribeEndpointConfig (read)", "sagemaker:DescribeModel (read)",
                         "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig"]
        scales = target.serverless is None and manifest.scaling.max_replicas > max(
            1, manifest.scaling.min_replicas)
        if action is Action.CREATE or live.get("state") != DeployState.READY.value:
            calls += ["sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint until InService "
                      "(read)"]
        else:
            calls += ["application-autoscaling:DescribeScalableTargets (read)",
                      "application-autoscaling:DeregisterScalableTarget (when registered)",
                      f"sagemaker:UpdateEndpoint (blue/green, {target.deployment})",
                      "sagemaker:DescribeEndpoint until InService (read)"]
        if manifest.smoke:
            calls.append(f"sagemaker-runtime:InvokeEndpoint x{len(manifest.smoke)} (smoke)")
        if scales:
            calls += ["application-autoscaling:RegisterScalableTarget",
                      "application-autoscaling:PutScalingPolicy"]
        return calls

    # -- changing ------------------------------------------------------------------------------
    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list:
        from .steps import SageMakerStep
        return [SageMakerStep(ctx, self.session(ctx), release, observed)]

    def outcome(self, ctx: Context, steps: list, results: list) -> dict:
        step = steps[0]
        return {k: v for k, v in {"endpoint": endpoint_name(ctx), "config": step.config,
                                  "image": step.image, "digest": step.digest,
                                  "region": step.aws.region}.items() if v}

    def caller(self, ctx: Context, observed: Observed) -> Call:
        aws, name = self.session(ctx), endpoint_name(ctx)
        return invoker(aws, name)

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        """The endpoint's CloudWatch Logs group, every stream interleaved by time."""
        aws = self.session(ctx)
        group = f"/aws/sagemaker/Endpoints/{endpoint_name(ctx)}"
        last = deque(maxlen=max(lines, 0) or None)
        since = 0
        for event in _events(aws, group, 0):
            last.append(event)
        for event in last if lines else []:
            yield _line(event)
        for event in last:
            since = max(since, event.get("timestamp", 0) + 1)
        seen = {e.get("eventId") for e in last}
        while follow:
            time.sleep(2)
            for event in _events(aws, group, since):
                if event.get("eventId") in seen:
                    continue
                seen.add(event.get("eventId"))
                since = max(since, event.get("timestamp", 0))
                yield _line(event)

    def delete(self, ctx: Context, observed: Observed) -> None:
        """The endpoint, its scaling target and policy, and every model and endpoint config of
        this deployment (by name prefix and tag): what a lost journal would leak."""
        aws, name = self.session(ctx), endpoint_name(ctx)
        from .steps import deregister_scaling, wait_gone
        deregister_scaling(aws, name)
        if self.describe(ctx) is not None:
            ctx.reporter.step(f"deleting endpoint {name}")
            aws.call("sagemaker", "DeleteEndpoint", EndpointName=name)
            wait_gone(aws, name, ctx)
        for res in self.leftovers(ctx):
            ctx.reporter.step(f"deleting {res.kind} {res.id}")
            op = "DeleteEndpointConfig" if res.kind == "endpoint-config" else "DeleteModel"
            key = "EndpointConfigName" if res.kind == "endpoint-config" else "ModelName"
            try:
                aws.call("sagemaker", op, **{key: res.id})
            except InvalidInput as exc:            # gone meanwhile
                if "could not find" not in exc.message.lower():
                    raise


def invoker(aws: Aws, name: str) -> Call:
    """payload -> (HTTP status, body) through InvokeEndpoint."""
    def call(payload):
        body = json.dumps({"input": payload}).encode()
        client = aws.client("sagemaker-runtime")
        try:
            reply = client.invoke_endpoint(EndpointName=name, Body=body,
                                           ContentType="application/json",
                                           Accept="application/json")
        except aws._botocore.exceptions.ClientError as exc:
            if aws.code(exc) == "ModelError":       # the container answered non-2xx
                status = int(exc.response.get("OriginalStatusCode") or 500)
                return status, _json(exc.response.get("OriginalMessage") or
                                     exc.response.get("Error", {}).get("Message", ""))
            raise aws.translate(exc, "InvokeEndpoint", "sagemaker-runtime") from None
        except aws._botocore.exceptions.BotoCoreError as exc:
            raise ProviderError(f"InvokeEndpoint {name} failed: {aws.blank(str(exc))}") from None
        return 200, _json(reply["Body"].read().decode("utf-8", "replace"))
    return call


def _json(text: str):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _variant_status(variant: dict) -> str:
    statuses = variant.get("VariantStatus") or []
    return statuses[-1].get("Status", "") if statuses else ""


def _events(aws: Aws, group: str, since: int) -> Iterator[dict]:
    token = None
    while True:
        params = {"logGroupName": group, "startTime": since, "interleaved": True}
        if token:
            params["nextToken"] = token
        try:
            page = aws.call("logs", "FilterLogEvents", **params)
        except ProviderError as exc:
            if "ResourceNotFoundException" in exc.message:      # no log yet
                return
            raise
        yield from page.get("events") or []
        token = page.get("nextToken")
        if not token or not page.get("events"):
            return


def _line(event: dict) -> str:
    return str(event.get("message", "")).rstrip("\n")


def _ours(aws: Aws, arn: str | None, identity: str) -> bool:
    """The resource carries this deployment's tag (a prefix match alone could be another's)."""
    if not arn:
        return False
    listed = aws.call("sagemaker", "ListTags", ResourceArn=arn).get("Tags") or []
    return {"Key": TAG_DEPLOYMENT, "Value": identity} in listed
