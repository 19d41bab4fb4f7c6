"""Faults a test sets on the emulator (``POST /_emulator/faults``), so the adapter's error paths
run against the same server as its happy paths.

``{"errors": [{"operation": "PUT onlineEndpoints", "code": "AuthorizationFailed", "count": 2}]}``
    the next 2 matching calls fail with that code (``operation`` is ``METHOD resource-kind``,
    e.g. ``PUT deployments``, ``POST listKeys``, ``GET onlineEndpoints``, or ``*``; ``count: null``
    until reset; ``message`` overrides the default). Codes and statuses: ``ERRORS``.
``{"quotas": {"Standard_DS3_v2": 1}}``
    the subscription's quota of instances of that SKU for managed online endpoints
    (a deployment asking for more is refused with QuotaExceeded, in vCPUs as Azure words it).
``{"startup_seconds": 5}``
    how long a deployment's containers have to pass the liveness and readiness probes.
``{"transition_seconds": 2}``
    a deployment's create or update waits this long before its containers start (to interrupt
    a command while a deployment is Creating).

Each POST replaces the faults it names; ``POST /_emulator/reset`` clears all of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..faults import Fault, parse_errors, take

#: code -> (HTTP status, default message), as ARM and Azure ML answer them.
ERRORS = {
    "AuthorizationFailed": (403, "The client 'mlsv-test' with object id '00000000-0000-0000-0000-"
                                 "000000000001' does not have authorization to perform action "
                                 "'Microsoft.MachineLearningServices/workspaces/{kind}/{verb}' "
                                 "over scope '{scope}' or the scope is invalid. If access was "
                                 "recently granted, please refresh your credentials."),
    "TooManyRequests": (429, "The request is being throttled as the limit has been reached for "
                             "operation type - Write. Please retry after some time."),
    "QuotaExceeded": (409, "Not enough quota available for Standard_DS3_v2 in SubscriptionId "
                           "{sub}. Current usage/limit: 4/4. Additional needed: 4."),
    "ResourceNotFound": (404, "The Resource 'Microsoft.MachineLearningServices/{scope}' was not "
                              "found."),
    "InternalServerError": (500, "The server encountered an internal error."),
    "ServiceUnavailable": (503, "The service is temporarily unavailable."),
    "BadArgument": (400, "The request is invalid."),
}


@dataclass
class Faults:
    errors: list[Fault] = field(default_factory=list)
    quotas: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    transition_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, spec: dict) -> None:
        unknown = set(spec) - {"errors", "quotas", "startup_seconds", "transition_seconds"}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        with self._lock:
            if "errors" in spec:
                self.errors = parse_errors(spec["errors"], ERRORS)
            if "quotas" in spec:
                self.quotas = {str(k): int(v) for k, v in spec["quotas"].items()}
            for key in ("startup_seconds", "transition_seconds"):
                if key in spec:
                    setattr(self, key, float(spec[key]))

    def take(self, operation: str) -> Fault | None:
        """The fault for this call, if one matches (its count goes down)."""
        with self._lock:
            return take(self.errors, operation)

    def snapshot(self) -> dict:
        with self._lock:
            return {"errors": [vars(f) for f in self.errors], "quotas": dict(self.quotas),
                    "startup_seconds": self.startup_seconds,
                    "transition_seconds": self.transition_seconds}
