"""The ``azureml`` target: the release's image served by an Azure ML managed online endpoint.

Names and identity. The endpoint is the target's ``endpoint``, else ``NAME-TARGET`` (Azure's
rules: 3-32 characters, a letter first). Each release is a managed online deployment named
``blue`` or ``green`` (the one that takes no traffic), with the image as its environment and
the runtime's routes as the environment's inference config (liveness ``/``, readiness
``/health``, scoring ``/score``, port 8080). Endpoint and deployments carry the tags
``mlserve:deployment`` (``name.target``) and ``mlserve:release``; a deployment also
``mlserve:shape`` (six hex digits of image, SKU, count and environment), so a redeploy of
what serves is recognised, and a rollback finds the deployment it left.

``observe`` (read only: Online Endpoints - Get, Online Deployments - List) maps
provisioningState through the provider's ``STATE_MAP``; the serving release is the one of the
deployment with the most traffic. Deploy, update, rollback: ``steps.AzureMLStep``. ``caller``:
the endpoint's scoring URI with its key (``{"input": X}`` -> ``{"output": ...}``, the runtime's
/score contract). ``logs``: Online Deployments - Get Logs of the serving deployment.
``delete``: the endpoint, which deletes its deployments (found by name, so a lost journal
leaks nothing).

azure-ai-ml and azure-identity (the ``azure`` extra) are imported by ``api.Azure`` only, when a
command uses this target.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, Iterator

from ...errors import InvalidInput, MlserveError, ProviderError
from ...providers import info as provider_info
from ...vocab import Action, DeployState, Feature
from ..base import Call, Context, Observed, ReleaseSpec, Resource
from ..pushed_image import PushedImageAdapter
from ..pushed_image import instance_type as chosen_type
from .api import Azure

TAG_DEPLOYMENT = "mlserve:deployment"
TAG_RELEASE = "mlserve:release"
TAG_SHAPE = "mlserve:shape"
SLOTS = ("blue", "green")
PORT = 8080
#: The runtime's routes, as Azure ML's inference config of a custom container names them.
ROUTES = {"liveness_route": {"port": PORT, "path": "/"},
          "readiness_route": {"port": PORT, "path": "/health"},
          "scoring_route": {"port": PORT, "path": "/score"}}
MOVING = ("Creating", "Updating", "Deleting", "Scaling")


def endpoint_name(ctx: Context) -> str:
    if ctx.target.endpoint:
        return ctx.target.endpoint
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{ctx.manifest.name}-{ctx.target_name}").strip("-")
    if not name[:1].isalpha():
        name = f"m-{name}"
    return name[:32].rstrip("-").ljust(3, "0")


def image_ref(ctx: Context, release_id: str) -> str:
    return f"{ctx.target.image_repository(ctx.manifest.name)}:{release_id}"


def instance_type(ctx: Context, snapshot: dict) -> str:
    """The target's ``instance_type``, else the one ``resources`` map to (provider table)."""
    from ...providers.azureml import instance_type_for
    return chosen_type(ctx, snapshot, instance_type_for, "Azure ML SKU", "Standard_NC4as_T4_v3")


def instance_count(snapshot: dict) -> int:
    return max(1, int((snapshot.get("scaling") or {}).get("min_replicas", 1)))


def environment(ctx: Context, release: ReleaseSpec) -> dict[str, str]:
    """The deployment's environment variables (secrets only with ``secrets: environment``)."""
    env = dict(release.snapshot.get("env") or {})
    if ctx.target.secrets == "environment":
        env.update(ctx.secrets)
    env["MLSERVE_RELEASE"] = release.release_id
    # Azure ML probes and scores on the port the inference config names, whatever port the
    # image was built with (an image built for a docker target bakes that target's port in).
    env["MLSERVE_PORT"] = str(PORT)
    return env


def shape(ctx: Context, release: ReleaseSpec, image: str) -> str:
    """Six hex digits of what a release's deployment holds besides its release id."""
    env = environment(ctx, release)
    data = {"image": image, "sku": instance_type(ctx, release.snapshot),
            "count": instance_count(release.snapshot),
            "env": sorted((k, v) for k, v in env.items() if k not in ctx.secrets),
            "secrets": sorted(ctx.secrets) if ctx.target.secrets == "environment" else []}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:6]


def serving(endpoint: Any, deployments: list) -> Any:
    """The deployment taking the most traffic, or None."""
    traffic = dict(getattr(endpoint, "traffic", None) or {})
    live = [d for d in deployments if int(traffic.get(d.name, 0)) > 0]
    return max(live, key=lambda d: int(traffic.get(d.name, 0)), default=None)


def state_of(resource: Any) -> str:
    """provisioningState as Azure words it (the SDK hands an enum of them)."""
    found = getattr(resource, "provisioning_state", None)
    return str(getattr(found, "value", found) or "")


def tag(resource: Any, key: str) -> str | None:
    return (getattr(resource, "tags", None) or {}).get(key)


class AzureMLAdapter(PushedImageAdapter):
    name = "azureml"

    def __init__(self) -> None:
        self.azure: Azure | None = None
        #: what ``observe`` read (endpoint, deployments): the step starts from it rather than
        #: reading again (a no-op deploy is then one Get and one List)
        self.observed_read: tuple[Any, list] | None = None

    def session(self, ctx: Context) -> Azure:
        """One ``Azure`` per command (its client and credential)."""
        if self.azure is None:
            self.azure = Azure(ctx.target, ctx.secrets)
        return self.azure

    def check(self, ctx: Context) -> None:
        """What the manifest asks that this target cannot do (exit 2), then the SDK, the
        subscription and a token (exit 3)."""
        manifest, target = ctx.manifest, ctx.target
        where = f"targets.{ctx.target_name}"
        if manifest.secrets and target.secrets != "environment":
            raise InvalidInput(
                f"target {ctx.target_name!r} (azureml) cannot pass secrets "
                f"({', '.join(manifest.secrets)}): {provider_info('azureml').reason(Feature.SECRETS)}",
                where=f"{where}.secrets",
                fix="set `secrets: environment` on the target to pass them as the deployment's "
                    "environment variables (visible to anyone who can read the deployment), or "
                    "remove them")
        if manifest.scaling.min_replicas == 0:
            raise InvalidInput("an Azure ML managed online deployment keeps at least one instance",
                               where="scaling.min_replicas",
                               fix="set scaling.min_replicas: 1 or more")
        instance_type(ctx, manifest.model_dump(mode="json"))
        self.session(ctx).check()

    # -- reading -----------------------------------------------------------------------------
    def read(self, ctx: Context) -> tuple[Any, list]:
        """(the endpoint, its deployments); a missing endpoint is a ProviderError (404)."""
        azure, name = self.session(ctx), endpoint_name(ctx)
        endpoint = azure.call(f"read endpoint {name}", lambda: azure.ml.online_endpoints.get(name))
        deployments = azure.call(f"list the deployments of {name}", lambda: list(
            azure.ml.online_deployments.list(name)))
        return endpoint, deployments

    def read_or_none(self, ctx: Context) -> tuple[Any, list]:
        try:
            return self.read(ctx)
        except ProviderError as exc:
            if _not_found(exc):
                return None, []
            raise

    def observe(self, ctx: Context) -> Observed:
        info = provider_info("azureml")
        try:
            endpoint, deployments = self.observed_read = self.read_or_none(ctx)
        except MlserveError as exc:
            return Observed(DeployState.UNREACHABLE, None, None, [], exc.message)
        if endpoint is None:
            return Observed(DeployState.NOT_DEPLOYED, None, None, [], "no endpoint")
        traffic = {k: int(v) for k, v in (endpoint.traffic or {}).items()}
        live = serving(endpoint, deployments)
        status = state_of(endpoint)
        resources = [Resource("endpoint", endpoint.id or endpoint.name, tag(live, TAG_RELEASE),
                              info.state(status), live is not None, f"{status} traffic "
                              f"{json.dumps(traffic, sort_keys=True)}")]
        rows = []
        for d in deployments:
            state = state_of(d)
            resources.append(Resource("deployment", d.name, tag(d, TAG_RELEASE), info.state(state),
                                      traffic.get(d.name, 0) > 0,
                                      f"{state} {traffic.get(d.name, 0)}%"))
            rows.append({"name": d.name, "release": tag(d, TAG_RELEASE), "state": state,
                         "traffic": traffic.get(d.name, 0), "instance_type": d.instance_type,
                         "instances": d.instance_count, "shape": tag(d, TAG_SHAPE)})
        release = tag(live, TAG_RELEASE) if live is not None and \
            state_of(live) in ("Succeeded", "Updating", "Scaling") else None
        if live is None:
            overall = DeployState.PENDING if status in MOVING else DeployState.FAILED \
                if status == "Failed" else DeployState.PENDING
        else:
            overall = info.state(state_of(live))
            if overall is DeployState.PENDING and release:
                overall = DeployState.READY       # an update of a live deployment still serves
        detail = f"endpoint {status}, " + (f"{live.name} serves {release}" if live is not None
                                           else "no deployment takes traffic")
        extra = {"endpoint": endpoint.name, "status": status, "traffic": traffic,
                 "deployments": rows, "serving": live.name if live is not None else None,
                 "workspace": ctx.target.workspace, "resource_group": ctx.target.resource_group}
        return Observed(overall, release, endpoint.scoring_uri, resources, detail, extra)

    @staticmethod
    def planned_calls(target, manifest, action: Action, live: dict) -> list[str]:
        """The calls a deploy would make (``mlserve plan``), in order; reads are marked."""
        reads = ["onlineEndpoints: Get (read)", "onlineEndpoints/deployments: List (read)"]
        if action is Action.NONE:
            return reads
        calls = reads + ["docker build + push REGISTRY/REPOSITORY:RELEASE"]
        if action is Action.CREATE or live.get("state") == DeployState.NOT_DEPLOYED.value:
            calls += ["onlineEndpoints: Create Or Update (key auth), wait"]
        calls += ["workspaces: Get (read)", "environments/versions: Create Or Update (the image)",
                  "onlineEndpoints/deployments: Create Or Update (blue or green, no traffic), "
                  "wait for Succeeded (liveness and readiness probes)"]
        if manifest.smoke:
            calls += ["onlineEndpoints: List Keys",
                      f"scoring URI x{len(manifest.smoke)} (smoke, azureml-model-deployment "
                      "header: the new deployment only)"]
        calls += ["onlineEndpoints: Create Or Update (traffic 100% to the new deployment), wait"]
        return calls

    # -- changing ------------------------------------------------------------------------------
    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list:
        from .steps import AzureMLStep
        return [AzureMLStep(ctx, self, release, observed)]

    def outcome(self, ctx: Context, steps: list, results: list) -> dict:
        step = steps[0]
        return {k: v for k, v in {"endpoint": endpoint_name(ctx), "deployment": step.slot,
                                  "image": step.image, "digest": step.digest,
                                  "workspace": ctx.target.workspace}.items() if v}

    def caller(self, ctx: Context, observed: Observed) -> Call:
        return Scorer(self.session(ctx), endpoint_name(ctx))

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        """Online Deployments - Get Logs of the serving deployment (else the newest)."""
        azure, name = self.session(ctx), endpoint_name(ctx)
        slot = observed.extra.get("serving") or next(
            (d["name"] for d in observed.extra.get("deployments") or []), None)
        if slot is None:
            return

        def fetch(tail: int) -> list[str]:
            text = azure.call(f"get the logs of deployment {slot}",
                              lambda: azure.ml.online_deployments.get_logs(slot, name, tail))
            return [line for line in str(text or "").splitlines()]
        seen = fetch(max(lines, 0) or 5000)
        yield from seen if lines else []
        while follow:
            time.sleep(2)
            now = fetch(5000)
            yield from _new_lines(seen, now)
            seen = now

    def delete(self, ctx: Context, observed: Observed) -> None:
        """The endpoint, which takes its deployments with it."""
        azure, name = self.session(ctx), endpoint_name(ctx)
        endpoint, _ = self.read_or_none(ctx)
        if endpoint is None:
            return
        if tag(endpoint, TAG_DEPLOYMENT) not in (None, ctx.identity):
            raise InvalidInput(f"endpoint {name} belongs to {tag(endpoint, TAG_DEPLOYMENT)}, "
                               f"not {ctx.identity}: not deleting it",
                               fix="set the target's endpoint to this deployment's own name")
        ctx.reporter.step(f"deleting endpoint {name} and its deployments")
        deadline = time.monotonic() + ctx.target.health_timeout
        with ctx.reporter.progress(f"deleting endpoint {name}") as progress:
            poller = azure.call(f"delete endpoint {name}",
                                lambda: azure.ml.online_endpoints.begin_delete(name))
            azure.wait(f"delete endpoint {name}", poller, deadline, progress)


class Scorer:
    """payload -> (HTTP status, body) through the endpoint's scoring URI with its key;
    ``deployment`` pins one deployment (the ``azureml-model-deployment`` header)."""

    def __init__(self, azure: Azure, endpoint: str, deployment: str | None = None) -> None:
        self.azure, self.endpoint, self.deployment = azure, endpoint, deployment
        self._target: tuple[str, str] | None = None
        self._session = None

    def _where(self) -> tuple[str, str]:
        if self._target is None:
            ml, name = self.azure.ml, self.endpoint
            uri = self.azure.call(f"read endpoint {name}",
                                  lambda: ml.online_endpoints.get(name)).scoring_uri
            keys = self.azure.call(f"list the keys of endpoint {name}",
                                   lambda: ml.online_endpoints.get_keys(name))
            self._target = (uri, keys.primary_key)
        return self._target

    def __call__(self, payload):
        import requests
        uri, key = self._where()
        if self._session is None:
            self._session = requests.Session()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if self.deployment:
            headers["azureml-model-deployment"] = self.deployment
        try:
            reply = self._session.post(uri, data=json.dumps({"input": payload}),
                                       headers=headers, timeout=90)
        except requests.RequestException as exc:
            raise ProviderError(f"scoring endpoint {self.endpoint} failed: "
                                f"{self.azure.blank(str(exc))[:300]}",
                                fix="check the network and the endpoint (mlserve status)") from None
        return reply.status_code, _json(reply.text)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _json(text: str):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` after the longest tail of ``before`` it starts with."""
    for start in range(len(before)):
        overlap = before[start:]
        if now[:len(overlap)] == overlap:
            return now[len(overlap):]
    return now


def _not_found(exc: ProviderError) -> bool:
    return "ResourceNotFound" in exc.message or "(404)" in exc.message or \
        "was not found" in exc.message
