"""The one step of a sagemaker deploy or rollback (``mlserve.adapters.phases`` runs it).

prepare
    Nothing to do when the endpoint is InService on the config this release would get (same
    name: same release, image and options): only DescribeEndpoint was called. Otherwise: the
    image ``REPOSITORY:RELEASE`` is built and pushed (``mlserve.artifacts.image``; a rollback
    pushes nothing: its image is in the registry already), then CreateModel and
    CreateEndpointConfig (skipped when a config of that name exists: a rollback reuses the one it
    left), recorded in the journal before the long wait. A first deploy is CreateEndpoint; a
    later one UpdateEndpoint with a blue/green DeploymentConfig (all at once, or a 10% canary;
    the target's ``rollback_alarms`` as AutoRollbackConfiguration): SageMaker starts the new
    fleet beside the old, checks it with ``GET /ping`` and shifts traffic, or rolls back.
    The step waits for InService with progress. An update that ends on the old config
    (SageMaker rolled back) or in Failed is exit 1 with SageMaker's FailureReason; the old
    fleet kept serving throughout. Then the smoke cases go through InvokeEndpoint; a failing
    case updates the endpoint back to the previous config before the deploy fails.
    An endpoint left Creating or Updating by a killed command is waited for first
    (re-attached); one left Failed by a first deploy is deleted and created again.
activate
    Autoscaling (Application Auto Scaling, instance endpoints with ``max_replicas`` above
    ``min_replicas``): the variant is registered as a scalable target with min/max from
    ``scaling`` and a target-tracking policy on SageMakerVariantInvocationsPerInstance of
    ``scaling.concurrency`` x 60 per instance and minute (each instance kept at about
    ``concurrency`` requests per second). Scaling is deregistered before an update and
    registered again here (SageMaker refuses to replace a variant that has a scalable target).
finish
    Nothing: the previous config and model are kept for ``rollback``; ``delete`` removes them.
abort
    A failed first deploy: the endpoint is deleted. Either way, the model and config this step
    created and nothing uses are deleted.
"""

from __future__ import annotations

import time

from ...errors import DeployError, InvalidInput
from ..base import Context, Observed, ReleaseSpec
from . import (ANSWERING, VARIANT, endpoint_name, image_ref, invoker, release_of,
               resource_name, tags, variant)
from ..phases import prepare_or_undo
from ..pushed_image import push_release
from .api import Aws

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
#: Seconds between DescribeEndpoint polls: quick at first, then every MAX_POLL seconds.
FIRST_POLL, MAX_POLL = 0.2, 10.0
CANARY_PERCENT = 10
#: Statuses an endpoint passes through on its own (a command waits them out).
MOVING = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def scaling_resource(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def deregister_scaling(aws: Aws, endpoint: str) -> bool:
    """Remove the variant's scalable target (its policies go with it), if there is one; True
    when there was."""
    found = aws.call("application-autoscaling", "DescribeScalableTargets",
                     ServiceNamespace="sagemaker", ResourceIds=[scaling_resource(endpoint)])
    if not found.get("ScalableTargets"):
        return False
    aws.call("application-autoscaling", "DeregisterScalableTarget",
             ServiceNamespace="sagemaker", ResourceId=scaling_resource(endpoint),
             ScalableDimension=SCALABLE_DIMENSION)
    return True


def wait_status(aws: Aws, endpoint: str, ctx: Context, moving: tuple[str, ...],
                what: str) -> dict:
    """DescribeEndpoint until its status leaves ``moving``; the last answer."""
    deadline = time.monotonic() + ctx.target.health_timeout
    delay, shown = FIRST_POLL, None
    with ctx.reporter.progress(what) as progress:
        while True:
            found = aws.call("sagemaker", "DescribeEndpoint", EndpointName=endpoint)
            status = found.get("EndpointStatus")
            if status != shown:
                progress.log(f"endpoint {endpoint}: {status}")
                shown = status
            if status not in moving:
                if status != "InService":
                    progress.failed()
                return found
            if time.monotonic() > deadline:
                progress.failed()
                raise DeployError(f"endpoint {endpoint} was still {status} after "
                                  f"{ctx.target.health_timeout:g}s",
                                  fix="see `mlserve status` and the endpoint's logs; raise the "
                                      "target's health_timeout if SageMaker is just slow")
            time.sleep(delay)
            delay = min(delay * 1.5, MAX_POLL)


def wait_gone(aws: Aws, endpoint: str, ctx: Context) -> None:
    delay, deadline = FIRST_POLL, time.monotonic() + ctx.target.health_timeout
    while time.monotonic() < deadline:
        try:
            aws.call("sagemaker", "DescribeEndpoint", EndpointName=endpoint)
        except InvalidInput as exc:
            if "could not find" in exc.message.lower():
                return
            raise
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)


class SageMakerStep:
    label = "sagemaker"

    def __init__(self, ctx: Context, aws: Aws, release: ReleaseSpec, observed: Observed) -> None:
        self.ctx, self.aws, self.release, self.observed = ctx, aws, release, observed
        self.endpoint = endpoint_name(ctx)
        self.previous = observed.release
        self.old_config: str | None = observed.extra.get("config")
        self.config: str | None = None
        self.image: str | None = None
        self.digest: str | None = None
        self.created: list[tuple[str, str]] = []     # (kind, name) made by this step
        self.created_endpoint = False
        self.updated = False
        self.descaled = False       # the serving variant's scaling was removed for the update

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self) -> bool:
        """See the module docstring; a failure cleans up what this step made, then raises."""
        return prepare_or_undo(self, self._prepare, self.ctx.reporter)

    def _prepare(self) -> bool:
        ctx, rid = self.ctx, self.release.release_id
        self.image = image_ref(ctx, rid)     # what SageMaker pulls: the target's repository
        self.config = resource_name(ctx, self.release, self.image)
        status = self.observed.extra.get("status")
        reattached = status in MOVING
        if reattached:
            ctx.reporter.step(f"endpoint {self.endpoint} is {status}, left so by an earlier "
                              "command: waiting for it")
            found = wait_status(self.aws, self.endpoint, ctx, MOVING,
                                f"waiting for endpoint {self.endpoint} to settle")
            status, self.old_config = found.get("EndpointStatus"), found.get("EndpointConfigName")
            self.previous = release_of(self.old_config) if status == "InService" else None
        if status == "InService" and self.old_config == self.config:
            if not reattached:
                ctx.reporter.step(f"{rid} already serves on endpoint {self.endpoint}: "
                                  "nothing to do")
                return False
            ctx.reporter.step(f"the earlier command's endpoint serves {rid}: checking it")
            self.previous = None            # the journal never recorded it as serving
            return self._checked()
        if status in ("Failed", "OutOfService", "UpdateRollbackFailed") and not \
                self._serving_before():
            ctx.reporter.step(f"deleting endpoint {self.endpoint}, left {status} by an "
                              "earlier command")
            self.aws.call("sagemaker", "DeleteEndpoint", EndpointName=self.endpoint)
            wait_gone(self.aws, self.endpoint, ctx)
            status = None
        self.digest = push_release(ctx, self.release, self.image)
        self._model_and_config()
        if status is None or status == "Deleting":
            self._create()
        else:
            self._update()
        return self._checked()

    def _checked(self) -> bool:
        """The smoke cases through InvokeEndpoint; a failure puts the previous config back."""
        rid = self.release.release_id
        reason = self._smoke()
        if reason is not None:
            was_updated = self.updated
            self._undo_update()
            raise DeployError(f"release {rid} answers on endpoint {self.endpoint}, but {reason}",
                              fix="fix the model or the smoke case and deploy again" +
                                  ("; the previous release serves again" if was_updated else ""))
        return True

    def _serving_before(self) -> bool:
        return bool(self.previous) and self.observed.extra.get("status") in ANSWERING

    def _environment(self) -> dict:
        env = dict(self.release.snapshot.get("env") or {})
        if self.ctx.target.secrets == "environment":
            env.update(self.ctx.secrets)
        env["MLSERVE_RELEASE"] = self.release.release_id
        # SageMaker's container contract: serve on 8080, whatever port the image was built with
        # (an image built for a docker target bakes that target's port in: `deploy --image`).
        env["MLSERVE_PORT"] = "8080"
        return env

    def _exists(self, operation: str, **params) -> bool:
        try:
            self.aws.call("sagemaker", operation, **params)
            return True
        except InvalidInput as exc:
            if "could not find" in exc.message.lower():
                return False
            raise

    def _model_and_config(self) -> None:
        ctx, aws, name, rid = self.ctx, self.aws, self.config, self.release.release_id
        if self._exists("DescribeEndpointConfig", EndpointConfigName=name):
            ctx.reporter.step(f"endpoint config {name} exists: reusing it")
            return
        if not self._exists("DescribeModel", ModelName=name):
            ctx.reporter.step(f"creating model {name}")
            aws.call("sagemaker", "CreateModel", ModelName=name,
                     ExecutionRoleArn=ctx.target.role, Tags=tags(ctx, rid),
                     PrimaryContainer={"Image": self.image, "Mode": "SingleModel",
                                       "Environment": self._environment()})
            self.created.append(("model", name))
        ctx.reporter.step(f"creating endpoint config {name}")
        aws.call("sagemaker", "CreateEndpointConfig", EndpointConfigName=name,
                 ProductionVariants=[variant(ctx, self.release.snapshot, name)],
                 Tags=tags(ctx, rid))
        self.created.append(("endpoint-config", name))
        ctx.record("endpoint-config", name, endpoint=self.endpoint, config=name,
                   image=self.image)

    def _create(self) -> None:
        ctx = self.ctx
        ctx.reporter.step(f"creating endpoint {self.endpoint}")
        self.aws.call("sagemaker", "CreateEndpoint", EndpointName=self.endpoint,
                      EndpointConfigName=self.config, Tags=tags(ctx))
        self.created_endpoint = True
        found = wait_status(self.aws, self.endpoint, ctx, ("Creating",),
                            f"waiting for endpoint {self.endpoint} to be InService")
        if found.get("EndpointStatus") != "InService":
            raise self._failed(found, "the endpoint did not start")

    def _update(self, config: str | None = None, what: str = "updating") -> dict:
        ctx, target = self.ctx, self.ctx.target
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        if target.deployment == "canary":
            routing = {"Type": "CANARY", "WaitIntervalInSeconds": target.canary_wait,
                       "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": CANARY_PERCENT}}
        deployment = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                                "TerminationWaitInSeconds": 0}}
        if target.rollback_alarms:
            deployment["AutoRollbackConfiguration"] = {
                "Alarms": [{"AlarmName": a} for a in target.rollback_alarms]}
        self.descaled = deregister_scaling(self.aws, self.endpoint) or self.descaled
        ctx.reporter.step(f"{what} endpoint {self.endpoint} to {config or self.config} "
                          "(blue/green: the current fleet serves until the new one is healthy)")
        self.aws.call("sagemaker", "UpdateEndpoint", EndpointName=self.endpoint,
                      EndpointConfigName=config or self.config, RetainAllVariantProperties=False,
                      DeploymentConfig=deployment)
        self.updated = config is None
        found = wait_status(self.aws, self.endpoint, ctx, ("Updating", "RollingBack"),
                            f"waiting for endpoint {self.endpoint} to be InService again")
        if config is None and (found.get("EndpointStatus") != "InService"
                               or found.get("EndpointConfigName") != self.config):
            self.updated = False
            raise self._failed(found, "SageMaker rolled the update back; the previous release "
                                      "kept serving")
        return found

    def _failed(self, found: dict, what: str) -> DeployError:
        reason = self.aws.blank(str(found.get("FailureReason") or "no reason given"))
        return DeployError(f"release {self.release.release_id} failed on endpoint "
                           f"{self.endpoint} ({found.get('EndpointStatus')}): {what}: {reason}",
                           fix="fix the model (see `mlserve logs`) and deploy again")

    def _smoke(self) -> str | None:
        cases = self.release.snapshot.get("smoke") or []
        if not cases:
            return None
        from ...checks import run_smoke
        from ...manifest import SmokeCase
        self.ctx.reporter.step(f"running {len(cases)} smoke case(s) through InvokeEndpoint")
        return run_smoke(invoker(self.aws, self.endpoint),
                         [SmokeCase.model_validate(c) for c in cases])

    def _undo_update(self) -> None:
        """After a failed smoke: back to the config that served before (its fleet again)."""
        if self.updated and self.old_config:
            self._update(self.old_config, "rolling back")
            self.updated = False
            self._register_scaling(self.old_snapshot())

    def old_snapshot(self) -> dict:
        current = self.ctx.current
        return current.manifest if current is not None else self.release.snapshot

    # -- activate, finish, abort -------------------------------------------------------------
    def activate(self) -> None:
        self._register_scaling(self.release.snapshot)

    def _register_scaling(self, snapshot: dict) -> None:
        scaling = snapshot.get("scaling") or {}
        low, high = max(1, int(scaling.get("min_replicas", 1))), int(scaling.get("max_replicas", 1))
        self.descaled = False
        if self.ctx.target.serverless is not None or high <= low:
            return
        resource = scaling_resource(self.endpoint)
        self.ctx.reporter.step(f"autoscaling {resource} between {low} and {high} instances")
        self.aws.call("application-autoscaling", "RegisterScalableTarget",
                      ServiceNamespace="sagemaker", ResourceId=resource,
                      ScalableDimension=SCALABLE_DIMENSION, MinCapacity=low, MaxCapacity=high)
        self.aws.call("application-autoscaling", "PutScalingPolicy",
                      PolicyName=f"mlserve-{self.endpoint}", ServiceNamespace="sagemaker",
                      ResourceId=resource, ScalableDimension=SCALABLE_DIMENSION,
                      PolicyType="TargetTrackingScaling",
                      TargetTrackingScalingPolicyConfiguration={
                          "TargetValue": float(int(scaling.get("concurrency", 4)) * 60),
                          "PredefinedMetricSpecification": {
                              "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                          "ScaleInCooldown": 300, "ScaleOutCooldown": 60})

    def finish(self) -> None:
        """The previous config and model stay for ``mlserve rollback``."""

    def abort(self) -> None:
        if self.created_endpoint:
            self.ctx.reporter.step(f"deleting endpoint {self.endpoint} (it never served)")
            self.aws.call("sagemaker", "DeleteEndpoint", EndpointName=self.endpoint)
            wait_gone(self.aws, self.endpoint, self.ctx)
            self.created_endpoint = False
        elif self.updated:
            self._undo_update()
        if self.descaled:          # the update never happened or was rolled back
            self._register_scaling(self.old_snapshot())
        for kind, name in reversed(self.created):
            op, key = (("DeleteEndpointConfig", "EndpointConfigName") if kind == "endpoint-config"
                       else ("DeleteModel", "ModelName"))
            self.aws.call("sagemaker", op, **{key: name})
        self.created = []
