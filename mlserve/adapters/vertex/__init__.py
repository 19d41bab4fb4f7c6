"""The ``vertex`` target: the release's image served by a Google Vertex AI endpoint.

Names and identity. The endpoint ID is the target's ``endpoint``, else ``name-target``
(lower case). Each release gets one Model, ID ``ENDPOINT-RELEASE-HASH`` (``HASH``: six hex
digits of what the model holds: image, machine, replicas, environment names), so a redeploy of
what serves is recognised by name and a rollback finds the model it left. Models and the
endpoints mlserve creates carry the labels ``mlserve-deployment`` (``name.target``, in label
characters) and ``mlserve-release``; ``delete`` finds them by those labels, never by the
journal.

``observe`` (read only: GetEndpoint, and only when there is no endpoint ListModels for
leftovers): the deployed models and the traffic split. The serving release is the one whose
deployed model takes the traffic. Deploy, update, rollback: ``steps.VertexStep``.
``caller``: ``predict`` (``{"instances": [X]}`` -> ``predictions[0]``, the runtime's
AIP_PREDICT_ROUTE contract). ``logs``: Cloud Logging ``entries.list`` for the endpoint.

google-cloud-aiplatform (the ``gcp`` extra) is imported by ``api.Gcp`` only, when a command
uses this target.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from typing import Iterator

from ...errors import InvalidInput, MlserveError, ProviderError
from ...providers import info as provider_info
from ...vocab import Action, DeployState, Feature
from ..base import Call, Context, Observed, ReleaseSpec, Resource
from ..pushed_image import PushedImageAdapter, memory_gib
from .api import Gcp

LABEL_DEPLOYMENT = "mlserve-deployment"
LABEL_RELEASE = "mlserve-release"
#: ``ENDPOINT-RELEASE-HASH``: how a model ID says its release.
_MODEL_RE = re.compile(r"-(r-[0-9a-f]{12})-[0-9a-f]{6}$")
CONTAINER_PORT = 8080
HEALTH_ROUTE, PREDICT_ROUTE = "/health", "/vertex/predict"


def endpoint_id(ctx: Context) -> str:
    if ctx.target.endpoint:
        return ctx.target.endpoint
    name = re.sub(r"[^a-z0-9]+", "-", f"{ctx.manifest.name}-{ctx.target_name}".lower()).strip("-")
    name = name if name[:1].isalpha() else f"m-{name}"
    return name[:63].rstrip("-")


def label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def labels(ctx: Context, release: str | None = None) -> dict[str, str]:
    found = {LABEL_DEPLOYMENT: label_value(ctx.identity)}
    return {**found, LABEL_RELEASE: release} if release else found


def release_of(model_name: str | None) -> str | None:
    found = _MODEL_RE.search((model_name or "").split("@", 1)[0])
    return found.group(1) if found else None


def machine(ctx: Context, snapshot: dict) -> dict:
    """The ``machineSpec`` of a release: the target's ``machine_type`` and ``accelerator``,
    else what ``resources`` maps to in the provider's table."""
    from ...providers.vertex import accelerator_for, machine_for
    target, res = ctx.target, snapshot.get("resources") or {}
    gpu = res.get("gpu") or None
    count = int(gpu.get("count", 1)) if gpu else 0
    chosen = machine_for(float(res.get("cpu", 1)), memory_gib(res.get("memory", "1Gi")),
                         gpu.get("type") if gpu else None, max(count, 1))
    accelerator = target.accelerator or (accelerator_for(gpu["type"]) if gpu else None)
    machine_type = target.machine_type or (chosen[0] if chosen else None)
    where = f"targets.{ctx.target_name}"
    if machine_type is None:
        raise InvalidInput(f"no Vertex AI machine type is known for resources {json.dumps(res)}",
                           where=f"{where}.machine_type",
                           fix="set the target's machine_type (and accelerator for a GPU), "
                               "e.g. g2-standard-8 with NVIDIA_L4")
    if gpu and accelerator is None:
        raise InvalidInput(f"no Vertex AI accelerator is known for GPU {gpu['type']!r}",
                           where=f"{where}.accelerator",
                           fix="set the target's accelerator (e.g. NVIDIA_L4) and machine_type")
    spec = {"machine_type": machine_type}
    if accelerator:
        spec.update(accelerator_type=accelerator,
                    accelerator_count=chosen[2] if chosen and not target.accelerator else
                    max(count, 1))
    return spec


def replicas(snapshot: dict) -> tuple[int, int]:
    scaling = snapshot.get("scaling") or {}
    low = max(1, int(scaling.get("min_replicas", 1)))
    return low, max(low, int(scaling.get("max_replicas", 1)))


def model_id(ctx: Context, release: ReleaseSpec, image: str) -> str:
    """``ENDPOINT-RELEASE-HASH``, at most 63 characters (Vertex's model ID limit)."""
    shape = {"image": image, "machine": machine(ctx, release.snapshot),
             "replicas": replicas(release.snapshot),
             "env": sorted((release.snapshot.get("env") or {}).items()),
             "secrets": sorted(ctx.secrets) if ctx.target.secrets == "environment" else []}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:6]
    return f"{endpoint_id(ctx)[:40].rstrip('-')}-{release.release_id}-{digest}"


def image_ref(ctx: Context, release_id: str) -> str:
    return f"{ctx.target.repository}:{release_id}"


def to_dict(message) -> dict:
    """A proto-plus message as the REST JSON (camelCase keys)."""
    from google.protobuf import json_format
    return json_format.MessageToDict(type(message).pb(message))


class VertexAdapter(PushedImageAdapter):
    name = "vertex"

    def __init__(self) -> None:
        self.gcp: Gcp | None = None
        #: GetEndpoint's last answer (``observe``'s, which a deploy's step reads again only
        #: after waiting for an earlier command's operations)
        self.last_endpoint: dict | None = None

    def session(self, ctx: Context) -> Gcp:
        """One ``Gcp`` per command (its clients and call count)."""
        if self.gcp is None:
            self.gcp = Gcp(ctx.target, ctx.secrets)
        return self.gcp

    def check(self, ctx: Context) -> None:
        """What the manifest asks that Vertex cannot do (exit 2), then the SDK, ADC and the
        project (exit 3)."""
        manifest, target = ctx.manifest, ctx.target
        where = f"targets.{ctx.target_name}"
        if manifest.secrets and target.secrets != "environment":
            raise InvalidInput(
                f"target {ctx.target_name!r} (vertex) cannot pass secrets "
                f"({', '.join(manifest.secrets)}): {provider_info('vertex').reason(Feature.SECRETS)}",
                where=f"{where}.secrets",
                fix="set `secrets: environment` on the target to pass them as the container's "
                    "environment (visible to anyone who can get the model), or remove them")
        if manifest.scaling.min_replicas == 0:
            raise InvalidInput("a Vertex AI deployed model keeps at least one replica",
                               where="scaling.min_replicas", fix="set scaling.min_replicas: 1")
        machine(ctx, manifest.model_dump(mode="json"))
        self.session(ctx)

    # -- reading -----------------------------------------------------------------------------
    def endpoint_name(self, ctx: Context) -> str:
        return f"{self.session(ctx).location}/endpoints/{endpoint_id(ctx)}"

    def get_endpoint(self, ctx: Context) -> dict | None:
        """GetEndpoint as REST JSON, or None when there is no such endpoint."""
        gcp = self.session(ctx)
        try:
            self.last_endpoint = to_dict(gcp.call("Endpoint", "GetEndpoint",
                                                  name=self.endpoint_name(ctx)))
        except ProviderError as exc:
            if "(NOT_FOUND)" not in exc.message:
                raise
            self.last_endpoint = None
        return self.last_endpoint

    def observe(self, ctx: Context) -> Observed:
        info = provider_info("vertex")
        try:
            gcp = self.session(ctx)
            found = self.get_endpoint(ctx)
        except MlserveError as exc:
            return Observed(DeployState.UNREACHABLE, None, None, [], exc.message)
        url = f"{gcp.api_endpoint}/v1/{self.endpoint_name(ctx)}:predict"
        if found is None:
            leftovers = self.leftover_models(ctx)
            return Observed(DeployState.NOT_DEPLOYED, None, url, leftovers,
                            "no endpoint" + (f"; {len(leftovers)} model(s) left"
                                             if leftovers else ""))
        split = {k: int(v) for k, v in (found.get("trafficSplit") or {}).items()}
        deployed = [{"id": d.get("id"), "model": d.get("model", "").split("@", 1)[0],
                     "release": release_of(d.get("model")), "traffic": split.get(d.get("id"), 0),
                     "machine": ((d.get("dedicatedResources") or {}).get("machineSpec") or {})}
                    for d in found.get("deployedModels") or []]
        serving = max((d for d in deployed if d["traffic"] > 0), key=lambda d: d["traffic"],
                      default=None)
        status = "SERVING" if serving else "EMPTY"
        resources = [Resource("endpoint", found.get("name", ""), serving and serving["release"],
                              info.state(status), bool(serving), status)]
        resources += [Resource("deployed-model", d["id"], d["release"], DeployState.READY,
                               d["traffic"] > 0, f"{d['traffic']}% {d['model']}")
                      for d in deployed]
        extra = {"endpoint": found.get("name"), "status": status, "region": gcp.region,
                 "project": gcp.project, "deployed": deployed, "traffic": split,
                 "labels": found.get("labels") or {}}
        detail = f"endpoint {status}" + (f": {len(deployed)} deployed model(s)" if deployed
                                         else "")
        return Observed(info.state(status), serving["release"] if serving else None, url,
                        resources, detail, extra)

    def leftover_models(self, ctx: Context) -> list[Resource]:
        """Models of this deployment (by label)."""
        gcp, found = self.session(ctx), []
        flt = f"labels.{LABEL_DEPLOYMENT}={label_value(ctx.identity)}"
        for model in self._list(gcp, "Model", "ListModels", flt):
            found.append(Resource("model", model.name, release_of(model.name),
                                  DeployState.PENDING, False, model.display_name))
        return found

    @staticmethod
    def _list(gcp: Gcp, service: str, method: str, flt: str) -> list:
        """Every item of a List method (the SDK's pager fetches the next pages)."""
        pager = gcp.call(service, method, request={"parent": gcp.location, "filter": flt})
        return list(pager)

    @staticmethod
    def planned_calls(target, manifest, action: Action, live: dict) -> list[str]:
        """The calls a deploy would make (``mlserve plan``), in order; reads are marked."""
        reads = ["EndpointService.GetEndpoint (read)"]
        if action is Action.NONE:
            return reads
        calls = reads + ["Operations.ListOperations on the endpoint (read)",
                         "docker build + push REPOSITORY:RELEASE (Artifact Registry)",
                         "ModelService.GetModel (read)", "ModelService.UploadModel + wait"]
        if action is Action.CREATE or live.get("state") == DeployState.NOT_DEPLOYED.value:
            calls += ["EndpointService.CreateEndpoint + wait (when the endpoint is missing)",
                      "EndpointService.DeployModel (100% traffic) + wait for ready"]
        else:
            calls += ["EndpointService.DeployModel beside the serving one (0% traffic) + wait "
                      "for ready",
                      "EndpointService.UpdateEndpoint (traffic_split: 100% to the new model)"]
        if manifest.smoke:
            calls.append(f"PredictionService.Predict x{len(manifest.smoke)} (smoke)")
        if action is not Action.CREATE and live.get("state") != DeployState.NOT_DEPLOYED.value:
            calls.append("EndpointService.UndeployModel of the old deployed model + wait")
        return calls

    # -- changing ------------------------------------------------------------------------------
    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list:
        from .steps import VertexStep
        return [VertexStep(ctx, self, release, observed)]

    def outcome(self, ctx: Context, steps: list, results: list) -> dict:
        step = steps[0]
        return {k: v for k, v in {"endpoint": self.endpoint_name(ctx), "model": step.model_name,
                                  "deployed_model": step.deployed_id, "image": step.image,
                                  "digest": step.digest, "region": ctx.target.region}.items()
                if v}

    def caller(self, ctx: Context, observed: Observed) -> Call:
        return predictor(self.session(ctx), self.endpoint_name(ctx))

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        """The endpoint's container output from Cloud Logging (``entries.list``)."""
        gcp = self.session(ctx)
        session = gcp.session()
        flt = (f'resource.type="aiplatform.googleapis.com/Endpoint" AND '
               f'resource.labels.endpoint_id="{endpoint_id(ctx)}" AND '
               f'resource.labels.location="{gcp.region}"')
        newest = _entries(gcp, session, flt, max(lines, 1), "timestamp desc") if lines else []
        for entry in reversed(newest):
            yield _line(entry)
        since = newest[0]["timestamp"] if newest else _now()
        seen = {e.get("insertId") for e in newest}
        while follow:
            time.sleep(2)
            for entry in _entries(gcp, session, f'{flt} AND timestamp>="{since}"', 1000,
                                  "timestamp asc"):
                if entry.get("insertId") in seen:
                    continue
                seen.add(entry.get("insertId"))
                since = entry.get("timestamp", since)
                yield _line(entry)

    def delete(self, ctx: Context, observed: Observed) -> None:
        """Every deployed model of this deployment's models undeployed, the endpoints mlserve
        created deleted, the models deleted: found by labels (and the endpoint's ID), never by
        the journal."""
        from .steps import undeploy
        gcp, mine = self.session(ctx), label_value(ctx.identity)
        flt = f"labels.{LABEL_DEPLOYMENT}={mine}"
        models = {m.name for m in self._list(gcp, "Model", "ListModels", flt)}
        endpoints = {e.name: to_dict(e) for e in self._list(gcp, "Endpoint", "ListEndpoints", flt)}
        named = self.get_endpoint(ctx)
        if named is not None:
            endpoints.setdefault(named["name"], named)
        deadline = time.monotonic() + ctx.target.health_timeout
        for name, endpoint in endpoints.items():
            ours = endpoint.get("labels", {}).get(LABEL_DEPLOYMENT) == mine
            deployed = [d for d in endpoint.get("deployedModels") or []
                        if ours or d.get("model", "").split("@", 1)[0] in models]
            split = {k: int(v) for k, v in (endpoint.get("trafficSplit") or {}).items()}
            for d in sorted(deployed, key=lambda d: split.get(d["id"], 0)):
                ctx.reporter.step(f"undeploying {d['id']} ({d.get('displayName', '')}) from "
                                  f"{name}")
                split.pop(d["id"], None)
                rest = _rebalanced(split)
                undeploy(gcp, name, d["id"], rest, deadline)
                split = rest
            if ours:
                ctx.reporter.step(f"deleting endpoint {name}")
                _gone_ok(lambda: gcp.wait(gcp.call("Endpoint", "DeleteEndpoint", name=name),
                                          "DeleteEndpoint", deadline))
        for name in sorted(models):
            ctx.reporter.step(f"deleting model {name}")
            _gone_ok(lambda: gcp.wait(gcp.call("Model", "DeleteModel", name=name),
                                      "DeleteModel", deadline))


def _rebalanced(split: dict[str, int]) -> dict[str, int]:
    """The split of the deployed models left: unchanged when it sums to 100, else all of the
    traffic to the one that had most (Vertex needs 100 while any is deployed)."""
    if not split or sum(split.values()) == 100:
        return split
    top = max(split, key=lambda k: split[k])
    return {k: (100 if k == top else 0) for k in split}


def _gone_ok(action) -> None:
    try:
        action()
    except ProviderError as exc:            # gone meanwhile
        if "(NOT_FOUND)" not in exc.message:
            raise


def predictor(gcp: Gcp, endpoint: str) -> Call:
    """payload -> (HTTP status, body) through ``predict`` (``{"instances": [payload]}`` ->
    ``{"output": predictions[0]}``). Sent as REST JSON with the ADC session rather than
    through the GAPIC client, whose ``protobuf.Value`` turns every number into a float."""
    session = gcp.session()
    url = f"{gcp.api_endpoint}/v1/{endpoint}:predict"

    def call(payload):
        gcp.calls.append("Prediction.Predict")
        try:
            reply = session.post(url, json={"instances": [payload]}, timeout=70)
        except OSError as exc:
            raise ProviderError(f"Predict on {endpoint} failed: {type(exc).__name__}",
                                fix="check the network and the target's api_endpoint") from None
        try:
            body = reply.json()
        except ValueError:
            body = reply.text
        if reply.status_code != 200:
            if reply.status_code in (401, 403, 404):
                from google.api_core import exceptions
                raise gcp.translate(exceptions.from_http_response(reply), "Predict",
                                    retried=False)
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else body
            return reply.status_code, {"error": gcp.blank(str(message))[:2000]}
        predictions = body.get("predictions") if isinstance(body, dict) else None
        return 200, {"output": predictions[0] if predictions else None}
    call.close = session.close
    return call


def _entries(gcp: Gcp, session, flt: str, size: int, order: str) -> list[dict]:
    body = {"resourceNames": [f"projects/{gcp.project}"], "filter": flt, "orderBy": order,
            "pageSize": min(size, 1000)}
    gcp.calls.append("Logging.ListLogEntries")
    found: list[dict] = []
    while len(found) < size:
        try:
            reply = session.post(f"{gcp.logging_endpoint}/v2/entries:list", json=body, timeout=60)
        except OSError as exc:
            raise ProviderError(f"Cloud Logging could not be reached ({type(exc).__name__})",
                                fix="check the network and the target's logging_endpoint") \
                from None
        if reply.status_code != 200:
            from google.api_core import exceptions
            raise gcp.translate(exceptions.from_http_response(reply), "ListLogEntries",
                                retried=False)
        page = reply.json()
        found += page.get("entries") or []
        if not page.get("nextPageToken"):
            break
        body["pageToken"] = page["nextPageToken"]
    return found[:size]


def _line(entry: dict) -> str:
    payload = entry.get("textPayload")
    if payload is None:
        payload = json.dumps(entry.get("jsonPayload") or {})
    return str(payload).rstrip("\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
