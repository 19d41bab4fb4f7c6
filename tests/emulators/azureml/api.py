"""The emulator's state and the ARM operations on it (Azure ML REST API 2024-04-01 "Online
Endpoints" and "Online Deployments": Create Or Update, Get, List, Delete, List Keys, Get Logs;
"Workspaces - Get"; "Environment Versions - Create Or Update / Get").

Long-running operations follow ARM's asynchronous pattern: a PUT answers 201 (a DELETE 202)
with ``Azure-AsyncOperation`` naming an operation status resource (``InProgress`` ->
``Succeeded`` / ``Failed`` with ``error``), and the resource's ``provisioningState`` moves
(``Creating``/``Updating``/``Deleting`` -> ``Succeeded``/``Failed``). Work runs in a thread per
operation. Errors are ``ApiError`` (ARM's ``{"error": {"code", "message"}}``).
"""

from __future__ import annotations

import copy
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

from .containers import Docker, Instance, Route
from .faults import Faults

PROVIDER = "Microsoft.MachineLearningServices"
#: Instance types (SKUs) managed online endpoints accept: "Managed online endpoints SKU list".
SKUS = {"Standard_DS1_v2": 1, "Standard_DS2_v2": 2, "Standard_DS3_v2": 4, "Standard_DS4_v2": 8,
        "Standard_DS5_v2": 16, "Standard_F2s_v2": 2, "Standard_F4s_v2": 4, "Standard_F8s_v2": 8,
        "Standard_F16s_v2": 16, "Standard_E2s_v3": 2, "Standard_E4s_v3": 4,
        "Standard_E8s_v3": 8, "Standard_NC4as_T4_v3": 4, "Standard_NC6s_v3": 6,
        "Standard_NC24ads_A100_v4": 24, "Standard_NV36ads_A10_v5": 36}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.headers = code, message, status, headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(kind: str, path: str) -> ApiError:
    return ApiError("ResourceNotFound", f"The Resource '{PROVIDER}/{path}' was not found.", 404)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())


@dataclass
class Operation:
    id: str
    status: str = "InProgress"
    error: dict | None = None
    started: str = field(default_factory=now)
    ended: str | None = None

    def done(self, error: dict | None = None) -> None:
        self.status, self.error, self.ended = ("Failed" if error else "Succeeded"), error, now()


@dataclass
class Deployment:
    name: str
    body: dict
    state: str = "Creating"
    instances: list[Instance] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)
    generation: int = 0


@dataclass
class Endpoint:
    name: str
    body: dict
    keys: dict
    state: str = "Creating"
    deployments: dict[str, Deployment] = field(default_factory=dict)


class Store:
    def __init__(self, docker: Docker, location: str, base_url: str, startup_timeout: float,
                 token: str) -> None:
        self.docker, self.location, self.base_url = docker, location, base_url
        self.startup_timeout, self.token = startup_timeout, token
        self.lock = threading.RLock()
        self.reset(remove=False)

    def reset(self, remove: bool = True) -> None:
        with self.lock:
            if remove:
                self.docker.remove_all()
            self.endpoints: dict[str, Endpoint] = {}
            self.environments: dict[str, dict] = {}
            self.operations: dict[str, Operation] = {}
            self.faults = Faults()
            self.calls: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------
    def scope(self, sub: str, rg: str, ws: str) -> str:
        return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/workspaces/{ws}")

    def operation(self, sub: str) -> tuple[Operation, dict]:
        op = Operation(uuid.uuid4().hex)
        self.operations[op.id] = op
        url = (f"{self.base_url}/subscriptions/{sub}/providers/{PROVIDER}/locations/"
               f"{self.location}/mfeOperationsStatus/{op.id}?api-version=2024-04-01")
        return op, {"Azure-AsyncOperation": url, "Location": url, "retry-after-ms": "10"}

    def endpoint(self, name: str, path: str) -> Endpoint:
        found = self.endpoints.get(name.lower())
        if found is None:
            raise not_found("onlineEndpoints", path)
        return found

    def quota_left(self, sku: str, skip: tuple[str, str] | None = None) -> int | None:
        limit = self.faults.quotas.get(sku)
        if limit is None:
            return None
        used = sum(int(d.body["sku"].get("capacity", 1)) for e in self.endpoints.values()
                   for d in e.deployments.values()
                   if d.body["properties"].get("instanceType") == sku and d.state != "Failed"
                   and (e.name, d.name) != skip)
        return limit * SKUS.get(sku, 1) - used * SKUS.get(sku, 1)

    # -- endpoints -------------------------------------------------------------------------------
    def put_endpoint(self, sub: str, rg: str, ws: str, name: str, body: dict) -> tuple[int, dict, dict]:
        props = dict(body.get("properties") or {})
        if props.get("authMode", "Key") not in ("Key", "AMLToken", "AADToken"):
            raise ApiError("BadArgument", f"Invalid authMode '{props.get('authMode')}'.")
        with self.lock:
            found = self.endpoints.get(name.lower())
            if found is not None and found.state in ("Creating", "Updating", "Deleting"):
                raise ApiError("Conflict", f"Endpoint '{name}' is in provisioning state "
                               f"'{found.state}': wait for the operation to finish.", 409)
            traffic = {k: int(v) for k, v in (props.get("traffic") or {}).items()}
            if found is not None:
                for deployment in traffic:
                    if deployment not in found.deployments:
                        raise ApiError("BadArgument", f"Deployment '{deployment}' in the traffic "
                                       f"of endpoint '{name}' does not exist.")
            elif traffic:
                raise ApiError("BadArgument", "A new endpoint has no deployments to send "
                               "traffic to.")
            if traffic and sum(traffic.values()) != 100 and sum(traffic.values()) != 0:
                raise ApiError("BadArgument", "The traffic of an endpoint adds up to 100 "
                               f"(or 0): {sum(traffic.values())}.")
            op, headers = self.operation(sub)
            path = f"{self.scope(sub, rg, ws)}/onlineEndpoints/{name}"
            keys = found.keys if found else {"primaryKey": secrets.token_urlsafe(32),
                                             "secondaryKey": secrets.token_urlsafe(32)}
            stored = {"id": path, "name": name, "type": f"{PROVIDER}/workspaces/onlineEndpoints",
                      "location": body.get("location") or self.location,
                      "tags": body.get("tags") or {}, "identity": body.get("identity")
                      or {"type": "SystemAssigned"}, "kind": body.get("kind") or "Managed",
                      "properties": {**props, "authMode": props.get("authMode", "Key"),
                                     "traffic": traffic,
                                     "scoringUri": f"{self.base_url}/score/{name}/score",
                                     "swaggerUri": f"{self.base_url}/score/{name}/swagger.json"}}
            if found is None:
                found = Endpoint(name, stored, keys)
                self.endpoints[name.lower()] = found
            else:
                found.body, found.state = stored, "Updating"
            found.body["properties"]["provisioningState"] = found.state
            body = copy.deepcopy(found.body)
        self._later(op, self._settle_endpoint, found)
        return 201, body, headers

    def _settle_endpoint(self, endpoint: Endpoint) -> dict | None:
        with self.lock:
            endpoint.state = "Succeeded"
            endpoint.body["properties"]["provisioningState"] = "Succeeded"
        return None

    def delete_endpoint(self, sub: str, rg: str, ws: str, name: str) -> tuple[int, dict, dict]:
        with self.lock:
            found = self.endpoints.get(name.lower())
            if found is None:
                return 204, {}, {}
            if found.state == "Deleting":
                raise ApiError("Conflict", f"Endpoint '{name}' is being deleted.", 409)
            found.state = found.body["properties"]["provisioningState"] = "Deleting"
            for deployment in found.deployments.values():
                deployment.generation += 1          # a create in progress is cancelled
            op, headers = self.operation(sub)

        def work(endpoint: Endpoint) -> None:
            for deployment in list(endpoint.deployments.values()):
                self._stop(deployment)
            with self.lock:
                self.endpoints.pop(endpoint.name.lower(), None)
        self._later(op, work, found)
        return 202, {}, headers

    # -- deployments ---------------------------------------------------------------------------
    def put_deployment(self, sub: str, rg: str, ws: str, endpoint_name: str, name: str,
                       body: dict) -> tuple[int, dict, dict]:
        scope = self.scope(sub, rg, ws)
        props, sku = dict(body.get("properties") or {}), dict(body.get("sku") or {})
        instance_type, capacity = _checked_deployment(props, sku)
        environment = self.environment_of(props.get("environmentId") or "")
        with self.lock:
            endpoint = self.endpoint(endpoint_name, f"workspaces/{ws}/onlineEndpoints/"
                                                    f"{endpoint_name}")
            if endpoint.state in ("Creating", "Deleting"):
                raise ApiError("Conflict", f"Endpoint '{endpoint_name}' is in provisioning state "
                               f"'{endpoint.state}'.", 409)
            found = endpoint.deployments.get(name)
            if found is not None and found.state in ("Creating", "Updating", "Deleting"):
                raise ApiError("Conflict", f"Deployment '{name}' is in provisioning state "
                               f"'{found.state}': wait for the operation to finish.", 409)
            left = self.quota_left(instance_type, (endpoint.name, name))
            need = capacity * SKUS[instance_type]
            if left is not None and need > left:
                raise ApiError("QuotaExceeded", f"Not enough quota available for {instance_type} "
                               f"in SubscriptionId {sub}. Current usage/limit: "
                               f"{self.faults.quotas[instance_type] * SKUS[instance_type] - left}/"
                               f"{self.faults.quotas[instance_type] * SKUS[instance_type]}. "
                               f"Additional needed: {need}. Please request a quota increase.",
                               409)
            stored = {"id": f"{scope}/onlineEndpoints/{endpoint.name}/deployments/{name}",
                      "name": name, "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
                      "location": body.get("location") or self.location,
                      "tags": body.get("tags") or {}, "sku": {"name": "Default", **sku,
                                                             "capacity": capacity},
                      "properties": props}
            if found is None:
                found = Deployment(name, stored)
                endpoint.deployments[name] = found
            else:
                found.body, found.state = stored, "Updating"
            found.generation += 1
            found.body["properties"]["provisioningState"] = found.state
            op, headers = self.operation(sub)
            body = copy.deepcopy(found.body)
        self._later(op, self._start, endpoint, found, environment, found.generation,
                    delay=self.faults.transition_seconds)
        return 201, body, headers

    def environment_of(self, arm_id: str) -> dict:
        key = arm_id.split("/environments/", 1)[-1].lower() if "/environments/" in arm_id else None
        found = self.environments.get(key or "")
        if found is None:
            raise ApiError("BadArgument", f"Environment '{arm_id}' was not found: a deployment "
                           "names an environment version of its workspace.")
        return found

    def _start(self, endpoint: Endpoint, deployment: Deployment, environment: dict,
               generation: int) -> dict | None:
        props = environment["properties"]
        config = props.get("inferenceConfig") or {}
        routes = {}
        for key in ("livenessRoute", "readinessRoute", "scoringRoute"):
            route = config.get(key) or {}
            if not route.get("path") or not route.get("port"):
                return self._fail(deployment, "BadArgument", f"The environment's inferenceConfig "
                                  f"has no {key} (path and port): a custom container names them.")
            routes[key] = Route(route["path"], int(route["port"]))
        if deployment.generation != generation:       # deleted or replaced meanwhile
            return None
        count = int(deployment.body["sku"]["capacity"])
        env = {str(k): str(v) for k, v in
               (deployment.body["properties"].get("environmentVariables") or {}).items()}
        timeout = self.faults.startup_seconds or self.startup_timeout
        fresh: list[Instance] = []
        try:
            for _ in range(count):
                fresh.append(self.docker.start(endpoint.name, deployment.name, props["image"], env))
            for instance in fresh:
                reason = self.docker.wait_ready(instance, routes["livenessRoute"],
                                                routes["readinessRoute"], timeout,
                                                lambda: deployment.generation != generation)
                if reason is not None:
                    logs = instance.logs(20).strip().splitlines()[-3:]
                    raise RuntimeError(f"{reason}. Last lines of the container log: "
                                       + " | ".join(logs))
        except Exception as exc:  # image pull, run or probes
            for instance in fresh:
                self.docker.stop(instance)
            return self._fail(deployment, "ResourceNotReady", str(exc)[:2000])
        with self.lock:
            if deployment.generation != generation:   # deleted or replaced while starting
                for instance in fresh:
                    self.docker.stop(instance)
                return {"code": "OperationCanceled", "message": "The deployment was deleted "
                        "or replaced while it was being created."}
            old, deployment.instances, deployment.routes = deployment.instances, fresh, routes
            deployment.state = "Succeeded"
            deployment.body["properties"]["provisioningState"] = "Succeeded"
        for instance in old:
            self.docker.stop(instance)
        return None

    def _fail(self, deployment: Deployment, code: str, message: str) -> dict:
        with self.lock:
            deployment.state = "Failed"
            deployment.body["properties"]["provisioningState"] = "Failed"
        return {"code": code, "message": message}

    def _stop(self, deployment: Deployment) -> None:
        for instance in deployment.instances:
            self.docker.stop(instance)
        deployment.instances = []

    def delete_deployment(self, sub: str, rg: str, ws: str, endpoint_name: str,
                          name: str) -> tuple[int, dict, dict]:
        with self.lock:
            endpoint = self.endpoint(endpoint_name, f"workspaces/{ws}/onlineEndpoints/"
                                                    f"{endpoint_name}")
            found = endpoint.deployments.get(name)
            if found is None:
                return 204, {}, {}
            share = int((endpoint.body["properties"].get("traffic") or {}).get(name, 0))
            if share > 0:
                raise ApiError("BadArgument", f"Deployment '{name}' takes {share}% of the traffic "
                               f"of endpoint '{endpoint.name}': set its traffic to 0 before "
                               "deleting it.")
            found.state = found.body["properties"]["provisioningState"] = "Deleting"
            found.generation += 1
            op, headers = self.operation(sub)

        def work(endpoint: Endpoint, deployment: Deployment) -> None:
            self._stop(deployment)
            with self.lock:
                endpoint.deployments.pop(deployment.name, None)
        self._later(op, work, endpoint, found)
        return 202, {}, headers

    # -- scoring -------------------------------------------------------------------------------
    def route(self, endpoint_name: str, key: str | None, pinned: str | None) -> tuple[Deployment, Instance]:
        with self.lock:
            endpoint = self.endpoints.get(endpoint_name.lower())
            if endpoint is None:
                raise ApiError("NotFound", f"Endpoint '{endpoint_name}' was not found.", 404)
            if key not in (endpoint.keys["primaryKey"], endpoint.keys["secondaryKey"]):
                raise ApiError("Unauthorized", "Authorization: Bearer KEY with a key of the "
                               "endpoint is required (listKeys).", 401)
            if pinned:
                deployment = endpoint.deployments.get(pinned)
                if deployment is None or not deployment.instances:
                    raise ApiError("NotFound", f"Deployment '{pinned}' of endpoint "
                                   f"'{endpoint_name}' does not exist or serves nothing.", 404)
            else:
                traffic = {k: v for k, v in (endpoint.body["properties"].get("traffic") or {}).items()
                           if v > 0 and k in endpoint.deployments
                           and endpoint.deployments[k].instances}
                if not traffic:
                    raise ApiError("NoValidDeployments", "No valid deployments to route to. Please "
                                   "check that the endpoint has at least one deployment with "
                                   "positive weight values or use a deployment specific header to "
                                   "route.", 424)
                names = list(traffic)
                deployment = endpoint.deployments[random.choices(names, [traffic[n] for n in
                                                                         names])[0]]
            return deployment, random.choice(deployment.instances)

    # -- operations ----------------------------------------------------------------------------
    def _later(self, op: Operation, work, *args, delay: float = 0.0) -> None:
        def run() -> None:
            time.sleep(delay)
            try:
                error = work(*args)
            except Exception as exc:  # a bug must fail the operation, not hang the poller
                error = {"code": "InternalServerError", "message": f"emulator error: {exc}"}
            op.done(error)
        threading.Thread(target=run, daemon=True).start()

    def operation_status(self, op_id: str) -> dict:
        op = self.operations.get(op_id)
        if op is None:
            raise ApiError("ResourceNotFound", f"Operation {op_id} was not found.", 404)
        out = {"id": op.id, "name": op.id, "status": op.status, "startTime": op.started}
        if op.ended:
            out["endTime"] = op.ended
        if op.error:
            out["error"] = op.error
        return out


def _checked_deployment(props: dict, sku: dict) -> tuple[str, int]:
    """(instance type, instance count) of a managed deployment's body, else BadArgument."""
    kind = props.get("endpointComputeType")
    if kind != "Managed":
        raise ApiError("BadArgument", f"endpointComputeType must be Managed here, not {kind}.")
    instance_type = props.get("instanceType") or ""
    if instance_type not in SKUS:
        raise ApiError("BadArgument", f"Instance type '{instance_type}' is not supported for "
                       "managed online deployments. See the list of supported SKUs at "
                       "https://learn.microsoft.com/azure/machine-learning/"
                       "reference-managed-online-endpoints-vm-sku-list")
    props.setdefault("scaleSettings", {"scaleType": "Default"})
    capacity = int(sku.get("capacity") or 1)
    if capacity < 1:
        raise ApiError("BadArgument", "sku.capacity must be at least 1.")
    return instance_type, capacity
