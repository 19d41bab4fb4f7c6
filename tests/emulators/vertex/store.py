"""The emulator's state and the Vertex AI v1 methods mlserve calls (REST reference:
``projects.locations.models`` upload/get/list/delete, ``projects.locations.endpoints``
create/get/list/patch/delete/deployModel/undeployModel/predict, ``operations`` get/list).

Long-running methods answer a ``google.longrunning.Operation`` at once and finish it from a
thread: DeployModel pulls the image, starts ``minReplicaCount`` replicas
(``containers.Engine``) and waits for each to pass its health route; only then does the
deployed model join the endpoint (and its ``trafficSplit``), as on Vertex. Every resource is
named ``projects/PROJECT/locations/LOCATION/{models,endpoints}/ID``; IDs are the caller's
(``modelId``, ``endpointId``) or numeric ones made here.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any

from . import machines
from .containers import Engine, Replica
from .errors import ApiError, invalid, not_found
from .faults import Faults

TYPES = "type.googleapis.com/google.cloud.aiplatform.v1."
EMPTY = "type.googleapis.com/google.protobuf.Empty"
#: modelId / endpointId: [a-z0-9_-] (models) or [a-z0-9-] (endpoints), not starting with a
#: digit or dash, at most 63 (CreateEndpointRequest.endpoint_id, UploadModelRequest.model_id).
_MODEL_ID = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
_ENDPOINT_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9_-]{0,63}")
_FILTER = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?')
MAX_PREDICT_BYTES = 1_572_864         # 1.5 MB, Vertex's online prediction request limit


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Store:
    def __init__(self, engine: Engine, project: str, project_number: str) -> None:
        self.engine, self.project, self.project_number = engine, project, project_number
        self.lock = threading.RLock()
        self.faults = Faults()
        self.calls: list[dict] = []
        self.tokens: set[str] = set()
        self._ids = itertools.count(1000000001)
        self.reset_state()

    def reset_state(self) -> None:
        self.models: dict[str, dict] = {}
        self.endpoints: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.replicas: dict[str, list[Replica]] = {}      # deployed model id -> replicas
        self.pending: dict[str, set[str]] = {}             # endpoint name -> model names deploying
        self.cancels: dict[str, threading.Event] = {}      # operation name -> cancel requested
        self.generation = 0

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.reset_state()
            self.faults = Faults()
            self.calls.clear()
        self.engine.remove_all()

    def new_id(self) -> str:
        return str(next(self._ids))

    # -- names and checks --------------------------------------------------------------------
    def parent(self, project: str, location: str) -> str:
        if project not in (self.project, self.project_number):
            raise ApiError("PERMISSION_DENIED", f"Permission denied on resource project "
                           f"{project} (or it may not exist).")
        return f"projects/{self.project}/locations/{location}"

    def model(self, name: str) -> dict:
        name = name.split("@", 1)[0]
        found = self.models.get(name)
        if found is None:
            raise not_found("Model", name)
        return found

    def endpoint(self, name: str) -> dict:
        found = self.endpoints.get(name)
        if found is None:
            raise not_found("Endpoint", name)
        return found

    # -- operations --------------------------------------------------------------------------
    def operation(self, resource: str, metadata: str) -> dict:
        op = {"name": f"{resource}/operations/{self.new_id()}",
              "metadata": {"@type": TYPES + metadata,
                           "genericMetadata": {"createTime": now(), "updateTime": now()}},
              "done": False}
        self.operations[op["name"]] = op
        return op

    def finish(self, op: dict, started: float, work, response_type: str, method: str) -> None:
        """Run ``work()`` (-> response dict) in a thread, after the faults'
        ``operation_seconds`` for this method (a cancel cuts that wait short): the operation
        and what it changes stay pending at least that long."""
        generation, hold = self.generation, self.faults.hold(method)
        cancel = self.cancels.get(op["name"])

        def run() -> None:
            wait = hold - (time.monotonic() - started)
            if wait > 0:
                cancel.wait(wait) if cancel is not None else time.sleep(wait)
            try:
                response, error = work(), None
            except ApiError as exc:
                response, error = None, exc
            with self.lock:
                if generation != self.generation:
                    return
                op["metadata"]["genericMetadata"]["updateTime"] = now()
                if error is not None:
                    op["error"] = error.rpc_status()
                else:
                    kind = response_type if "/" in response_type else TYPES + response_type
                    op["response"] = {"@type": kind, **(response or {})}
                op["done"] = True
        threading.Thread(target=run, daemon=True).start()

    def get_operation(self, name: str) -> dict:
        with self.lock:
            found = self.operations.get(name)
            if found is None:
                raise not_found("Operation", name)
            return json.loads(json.dumps(found))

    def cancel_operation(self, name: str) -> dict:
        """operations.cancel: best effort, as Google documents; a DeployModel still waiting for
        its replicas stops and ends with CANCELLED (its replicas removed)."""
        with self.lock:
            if name not in self.operations:
                raise not_found("Operation", name)
            event = self.cancels.get(name)
        if event is not None:
            event.set()
        return {}

    def list_operations(self, resource: str) -> dict:
        with self.lock:
            found = [json.loads(json.dumps(op)) for name, op in self.operations.items()
                     if name.startswith(resource + "/operations/")]
        return {"operations": found}

    # -- models ------------------------------------------------------------------------------
    def upload_model(self, parent: str, body: dict) -> dict:
        model = body.get("model")
        if not isinstance(model, dict):
            raise invalid("model is required.")
        spec = model.get("containerSpec") or {}
        if not spec.get("imageUri"):
            raise invalid("model.container_spec.image_uri is required.")
        if not model.get("displayName"):
            raise invalid("model.display_name is required.")
        _labels(model.get("labels"))
        model_id = body.get("modelId") or self.new_id()
        if not _MODEL_ID.fullmatch(model_id):
            raise invalid(f'Invalid model ID "{model_id}": up to 63 characters of [a-z0-9_-], '
                          "not starting with a number or a hyphen.")
        name = f"{parent}/models/{model_id}"
        if name in self.models:
            raise ApiError("ALREADY_EXISTS", f"Model {name} already exists.")
        stamp = now()
        self.models[name] = {
            "name": name, "displayName": model["displayName"], "containerSpec": spec,
            "labels": model.get("labels") or {}, "versionId": "1", "versionAliases": ["default"],
            "createTime": stamp, "updateTime": stamp, "versionCreateTime": stamp,
            "etag": secrets.token_hex(8),
            "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"]}
        op = self.operation(name, "UploadModelOperationMetadata")
        self.finish(op, time.monotonic(), lambda: {"model": name, "modelVersionId": "1"},
                    "UploadModelResponse", "UploadModel")
        return op

    def list_models(self, parent: str, query: dict) -> dict:
        found = [m for n, m in self.models.items()
                 if n.startswith(parent + "/") and _matches(m, query.get("filter"))]
        return _page(found, "models", query)

    def delete_model(self, name: str) -> dict:
        model = self.model(name)
        users = [e["name"] for e in self.endpoints.values()
                 if any(d["model"] == model["name"] for d in e["deployedModels"])]
        users += [e for e, names in self.pending.items() if model["name"] in names]
        if users:
            raise ApiError("FAILED_PRECONDITION", f'The Model "{model["name"]}" is deployed or '
                           f"being deployed at the following Endpoint(s): {', '.join(users)}.")
        del self.models[model["name"]]
        op = self.operation(model["name"], "DeleteOperationMetadata")
        self.finish(op, time.monotonic(), dict, EMPTY, "DeleteModel")
        return op

    # -- endpoints ---------------------------------------------------------------------------
    def create_endpoint(self, parent: str, body: dict, query: dict) -> dict:
        endpoint_id = query.get("endpointId") or self.new_id()
        if not (_ENDPOINT_ID.fullmatch(endpoint_id) or endpoint_id.isdigit()):
            raise invalid(f'Invalid endpoint ID "{endpoint_id}": up to 63 characters of '
                          "[a-z0-9-], starting with a letter.")
        if not body.get("displayName"):
            raise invalid("endpoint.display_name is required.")
        _labels(body.get("labels"))
        name = f"{parent}/endpoints/{endpoint_id}"
        if name in self.endpoints:
            raise ApiError("ALREADY_EXISTS", f"Endpoint {name} already exists.")
        stamp = now()
        endpoint = {"name": name, "displayName": body["displayName"],
                    "labels": body.get("labels") or {}, "deployedModels": [],
                    "trafficSplit": {}, "createTime": stamp, "updateTime": stamp,
                    "etag": secrets.token_hex(8)}
        self.endpoints[name] = endpoint
        op = self.operation(name, "CreateEndpointOperationMetadata")
        self.finish(op, time.monotonic(), lambda: self.get_endpoint(name), "Endpoint",
                    "CreateEndpoint")
        return op

    def get_endpoint(self, name: str) -> dict:
        with self.lock:
            return _strip(self.endpoint(name))

    def list_endpoints(self, parent: str, query: dict) -> dict:
        found = [e for n, e in self.endpoints.items()
                 if n.startswith(parent + "/") and _matches(e, query.get("filter"))]
        return _page(found, "endpoints", query)

    def update_endpoint(self, name: str, body: dict, query: dict) -> dict:
        endpoint = self.endpoint(name)
        mask = [m.strip() for m in (query.get("updateMask") or "").split(",") if m.strip()]
        unknown = set(mask) - {"trafficSplit", "traffic_split", "displayName", "display_name",
                               "labels"}
        if not mask or unknown:
            raise invalid(f"update_mask must name traffic_split, display_name or labels "
                          f"(got {', '.join(mask) or 'nothing'}).")
        if {"trafficSplit", "traffic_split"} & set(mask):
            split = _split(body.get("trafficSplit") or {})
            _check_split(split, {d["id"] for d in endpoint["deployedModels"]})
            endpoint["trafficSplit"] = split
        if {"displayName", "display_name"} & set(mask):
            endpoint["displayName"] = body.get("displayName") or endpoint["displayName"]
        if "labels" in mask:
            endpoint["labels"] = _labels(body.get("labels"))
        endpoint["updateTime"], endpoint["etag"] = now(), secrets.token_hex(8)
        return _strip(endpoint)

    def delete_endpoint(self, name: str) -> dict:
        endpoint = self.endpoint(name)
        if endpoint["deployedModels"] or self.pending.get(name):
            raise ApiError("FAILED_PRECONDITION", f"Endpoint {name} has deployed models or "
                           "models being deployed; undeploy them first.")
        del self.endpoints[name]
        op = self.operation(name, "DeleteOperationMetadata")
        self.finish(op, time.monotonic(), dict, EMPTY, "DeleteEndpoint")
        return op

    # -- deploy / undeploy -------------------------------------------------------------------
    def deploy_model(self, name: str, body: dict) -> dict:
        endpoint = self.endpoint(name)
        deployed = body.get("deployedModel") or {}
        model = self.model(deployed.get("model") or "")
        resources = deployed.get("dedicatedResources")
        if not resources:
            raise invalid(f'Model "{model["name"]}" does not support automatic resources: '
                          "set dedicated_resources.")
        cores = machines.check(resources.get("machineSpec") or {})
        low = int(resources.get("minReplicaCount") or 0)
        high = int(resources.get("maxReplicaCount") or low)
        if low < 1 or high < low:
            raise invalid("dedicated_resources.min_replica_count must be at least 1 and at most "
                          "max_replica_count.")
        quota = self.faults.quotas.get("custom_model_serving_cpus")
        if quota is not None and self._cpus_in_use() + cores * low > quota:
            raise ApiError("RESOURCE_EXHAUSTED", "The following quota metrics exceed quota "
                           "limits: aiplatform.googleapis.com/custom_model_serving_cpus",
                           [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                             "violations": [{"subject": f"projects/{self.project_number}",
                                             "description": "custom_model_serving_cpus"}]}])
        deployed_id = self.new_id()
        split = _split(body.get("trafficSplit") or {})
        existing = {d["id"] for d in endpoint["deployedModels"]}
        if split:
            _check_split(split, existing | {"0"})
        elif not existing:
            split = {"0": 100}
        record = {"id": deployed_id, "model": model["name"], "modelVersionId": "1",
                  "displayName": deployed.get("displayName") or model["displayName"],
                  "dedicatedResources": {**resources, "minReplicaCount": low,
                                         "maxReplicaCount": high},
                  "createTime": now(), "_cores": cores * low}
        op = self.operation(name, "DeployModelOperationMetadata")
        cancel = self.cancels[op["name"]] = threading.Event()
        self.pending.setdefault(name, set()).add(model["name"])
        generation, started = self.generation, time.monotonic()
        machine = (resources.get("machineSpec") or {}).get("machineType") or "n1-standard-2"

        def work() -> dict:
            try:
                replicas = self._start(model, endpoint, deployed_id, low, machine, cancel)
            finally:
                with self.lock:
                    self.pending.get(name, set()).discard(model["name"])
            with self.lock:
                if generation != self.generation or name not in self.endpoints:
                    for replica in replicas:
                        self.engine.stop(replica, name.rsplit("/", 1)[-1])
                    raise ApiError("ABORTED", "The endpoint was deleted during the deploy.")
                self.replicas[deployed_id] = replicas
                endpoint["deployedModels"].append(record)
                if split:
                    endpoint["trafficSplit"] = {(deployed_id if k == "0" else k): v
                                                for k, v in split.items()}
                else:
                    endpoint["trafficSplit"].setdefault(deployed_id, 0)
                endpoint["updateTime"] = now()
                return {"deployedModel": _public(record)}
        self.finish(op, started, work, "DeployModelResponse", "DeployModel")
        return op

    def _start(self, model: dict, endpoint: dict, deployed_id: str, count: int,
               machine: str, cancel: threading.Event) -> list[Replica]:
        if cancel.is_set():
            raise ApiError("CANCELLED", "Operation was cancelled.")
        spec, image = model["containerSpec"], model["containerSpec"]["imageUri"]
        endpoint_id = endpoint["name"].rsplit("/", 1)[-1]
        try:
            self.engine.pull(image)
        except Exception as exc:
            raise ApiError("FAILED_PRECONDITION", f"Failed to pull image {image}: "
                           f"{str(exc)[:300]}. Make sure the image exists in Artifact Registry "
                           "and the Vertex AI service agent may read it.") from None
        env = {"AIP_MACHINE_TYPE": machine, "AIP_PROJECT_NUMBER": self.project_number}
        replicas: list[Replica] = []
        try:
            for _ in range(count):
                replicas.append(self.engine.start(image, spec, env, endpoint_id, deployed_id))
            for replica in replicas:
                reason = self.engine.wait_healthy(replica, self.faults.health_seconds,
                                                  cancel.is_set)
                if cancel.is_set():
                    raise ApiError("CANCELLED", "Operation was cancelled.")
                if reason is not None:
                    raise ApiError("FAILED_PRECONDITION", "Model server never became ready. "
                                   "Please validate that your model file or container "
                                   "configuration are valid. Model server logs can be found at "
                                   f"Cloud Logging, resource endpoint {endpoint_id}. (Last "
                                   f"health check: {reason}.)")
        except BaseException:
            for replica in replicas:
                self.engine.stop(replica, endpoint_id)
            raise
        return replicas

    def _cpus_in_use(self) -> int:
        return sum(d.get("_cores", 0) for e in self.endpoints.values()
                   for d in e["deployedModels"])

    def undeploy_model(self, name: str, body: dict) -> dict:
        endpoint = self.endpoint(name)
        deployed_id = str(body.get("deployedModelId") or "")
        record = next((d for d in endpoint["deployedModels"] if d["id"] == deployed_id), None)
        if record is None:
            raise not_found("DeployedModel", f"{name}/deployedModels/{deployed_id}")
        rest = {d["id"] for d in endpoint["deployedModels"]} - {deployed_id}
        split = _split(body.get("trafficSplit") or {})
        if split:
            _check_split(split, rest)
        elif rest and endpoint["trafficSplit"].get(deployed_id, 0) > 0:
            raise ApiError("FAILED_PRECONDITION", f"Deployed model {deployed_id} has traffic "
                           "assigned; the traffic_split of the remaining deployed models must "
                           "be given to undeploy it.")
        else:
            split = {k: v for k, v in endpoint["trafficSplit"].items() if k != deployed_id}
        endpoint["deployedModels"].remove(record)
        endpoint["trafficSplit"] = split if rest else {}
        endpoint["updateTime"] = now()
        replicas = self.replicas.pop(deployed_id, [])
        endpoint_id = name.rsplit("/", 1)[-1]
        op = self.operation(name, "UndeployModelOperationMetadata")

        def work() -> dict:
            time.sleep(0.2)                  # requests already routed there finish
            for replica in replicas:
                self.engine.stop(replica, endpoint_id)
            return {}
        self.finish(op, time.monotonic(), work, "UndeployModelResponse", "UndeployModel")
        return op

    # -- predict -----------------------------------------------------------------------------
    def route(self, name: str) -> tuple[dict, Replica]:
        """The deployed model (by traffic split) and one of its replicas for a predict."""
        endpoint = self.endpoint(name)
        weights = [(d, endpoint["trafficSplit"].get(d["id"], 0))
                   for d in endpoint["deployedModels"]]
        weights = [(d, w) for d, w in weights if w > 0 and self.replicas.get(d["id"])]
        if not weights:
            raise ApiError("FAILED_PRECONDITION", f"Endpoint {name} has no deployed model "
                           "with traffic assigned.")
        deployed = random.choices([d for d, _ in weights], [w for _, w in weights])[0]
        return deployed, random.choice(self.replicas[deployed["id"]])

    def log_entries(self, endpoint_id: str) -> list[tuple[float, str]]:
        with self.lock:
            live = [r for e in self.endpoints.values() if e["name"].endswith("/" + endpoint_id)
                    for d in e["deployedModels"] for r in self.replicas.get(d["id"], [])]
        return self.engine.entries(endpoint_id, live)


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _labels(labels: Any) -> dict:
    labels = labels or {}
    if not isinstance(labels, dict) or len(labels) > 64 or not all(
            _LABEL.fullmatch(str(k)) and k and _LABEL.fullmatch(str(v))
            for k, v in labels.items()):
        raise invalid("Labels must have keys and values of at most 63 lowercase letters, "
                      "digits, underscores and dashes (keys not empty).")
    return labels


def _matches(resource: dict, flt: str | None) -> bool:
    if not flt:
        return True
    found = _FILTER.fullmatch(flt.strip())
    if not found:
        raise invalid(f'Unsupported filter "{flt}" (the emulator reads labels.KEY=VALUE).')
    return resource.get("labels", {}).get(found.group(1)) == found.group(2)


def _page(items: list[dict], key: str, query: dict) -> dict:
    size = min(int(query.get("pageSize") or 100), 100)
    start = int(query.get("pageToken") or 0)
    page = [_strip(i) for i in items[start:start + size]]
    out: dict[str, Any] = {key: page}
    if start + size < len(items):
        out["nextPageToken"] = str(start + size)
    return out


def _strip(resource: dict) -> dict:
    copy = json.loads(json.dumps(resource))
    for deployed in copy.get("deployedModels", []):
        deployed.pop("_cores", None)
    return copy


def _split(split: Any) -> dict[str, int]:
    if not isinstance(split, dict):
        raise invalid("traffic_split must be a map of deployed model IDs to percentages.")
    try:
        return {str(k): int(v) for k, v in split.items()}
    except (TypeError, ValueError):
        raise invalid("traffic_split values must be integers.") from None


def _check_split(split: dict[str, int], known: set[str]) -> None:
    unknown = sorted(set(split) - known)
    if unknown:
        raise invalid(f"traffic_split names deployed models that do not exist: "
                      f"{', '.join(unknown)}.")
    if any(v < 0 or v > 100 for v in split.values()) or (split and sum(split.values()) != 100):
        raise invalid("The sum of traffic_split values must be 100.")
