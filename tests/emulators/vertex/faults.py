"""Faults a test sets on the emulator (``POST /_emulator/faults``, JSON):

``{"errors": [{"method": "UploadModel", "status": "PERMISSION_DENIED", "count": 2}]}``
    the next 2 calls of that method fail with that canonical status (``"method": "*"``: every
    call; ``"count": null``: until reset; ``"message"`` overrides the default, which is
    Google's wording for that status). Methods are the RPC names (``UploadModel``,
    ``CreateEndpoint``, ``DeployModel``, ``UndeployModel``, ``UpdateEndpoint``, ``Predict``...).
``{"quotas": {"custom_model_serving_cpus": 4}}``
    the project's vCPU quota for online prediction in the region: a DeployModel whose
    ``minReplicaCount`` machines would exceed it fails with RESOURCE_EXHAUSTED.
``{"health_seconds": 20}``
    how long a replica has to answer its health route before the deploy fails (default 60).
``{"operation_seconds": 3, "operation_methods": ["DeployModel"]}``
    a long-running operation of those methods (every method when the list is empty or absent)
    started from now stays not done at least this long (to interrupt a command there).

Each POST replaces the keys it names; ``POST /_emulator/reset`` clears all of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .errors import STATUSES, ApiError

MESSAGES = {
    "PERMISSION_DENIED": "Permission '{permission}' denied on resource "
                         "'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
    "NOT_FOUND": "The resource '{resource}' was not found.",
    "RESOURCE_EXHAUSTED": "Quota exceeded for quota metric 'Resource management (CRUD) "
                          "requests' and limit 'Resource management (CRUD) requests per minute "
                          "per region' of service 'aiplatform.googleapis.com'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "UNAUTHENTICATED": "Request had invalid authentication credentials. Expected OAuth 2 "
                       "access token, login cookie or other valid authentication credential.",
}
PERMISSIONS = {"UploadModel": "aiplatform.models.upload", "GetModel": "aiplatform.models.get",
               "ListModels": "aiplatform.models.list", "DeleteModel": "aiplatform.models.delete",
               "CreateEndpoint": "aiplatform.endpoints.create",
               "GetEndpoint": "aiplatform.endpoints.get",
               "ListEndpoints": "aiplatform.endpoints.list",
               "UpdateEndpoint": "aiplatform.endpoints.update",
               "DeleteEndpoint": "aiplatform.endpoints.delete",
               "DeployModel": "aiplatform.endpoints.deploy",
               "UndeployModel": "aiplatform.endpoints.undeploy",
               "Predict": "aiplatform.endpoints.predict"}


@dataclass
class Fault:
    method: str
    status: str
    count: int | None
    message: str | None = None


@dataclass
class Faults:
    errors: list[Fault] = field(default_factory=list)
    quotas: dict[str, int] = field(default_factory=dict)
    health_seconds: float = 60.0
    operation_seconds: float = 0.0
    operation_methods: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, spec: dict) -> None:
        with self.lock:
            if "errors" in spec:
                errors = [Fault(e["method"], e["status"], e.get("count", 1), e.get("message"))
                          for e in spec["errors"]]
                unknown = [e.status for e in errors if e.status not in STATUSES]
                if unknown:
                    raise ValueError(f"unknown statuses {unknown}")
                self.errors = errors
            if "quotas" in spec:
                self.quotas = {str(k): int(v) for k, v in spec["quotas"].items()}
            if "health_seconds" in spec:
                self.health_seconds = float(spec["health_seconds"])
            if "operation_seconds" in spec:
                self.operation_seconds = float(spec["operation_seconds"])
                self.operation_methods = [str(m) for m in spec.get("operation_methods") or []]

    def hold(self, method: str) -> float:
        """Seconds an operation of ``method`` started now stays not done at least."""
        with self.lock:
            if self.operation_methods and method not in self.operation_methods:
                return 0.0
            return self.operation_seconds

    def take(self, method: str, resource: str) -> ApiError | None:
        """The injected error for this call, if any (its count goes down by one)."""
        with self.lock:
            for fault in self.errors:
                if fault.method not in (method, "*") or fault.count == 0:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                text = fault.message or MESSAGES.get(fault.status, fault.status.title())
                return ApiError(fault.status, text.format(
                    permission=PERMISSIONS.get(method, "aiplatform.unknown"), resource=resource))
        return None

    def snapshot(self) -> dict:
        with self.lock:
            return {"errors": [vars(e) for e in self.errors], "quotas": dict(self.quotas),
                    "health_seconds": self.health_seconds,
                    "operation_seconds": self.operation_seconds,
                    "operation_methods": list(self.operation_methods)}
