"""Faults a test sets on the emulator (``POST /_emulator/faults``, JSON), so an adapter's error
paths run against the same server as its happy paths.

``{"errors": [{"operation": "CreateEndpoint", "code": "ThrottlingException", "count": 3}]}``
    the next 3 CreateEndpoint calls fail with that code (``"operation": "*"`` matches every
    call, ``"count": null`` fails until the faults are reset; ``"message"`` overrides the
    default message). Codes and their HTTP status are SageMaker's (``ERRORS`` below); the
    runtime's (``ModelError``, ``ServiceUnavailable``...) apply to ``InvokeEndpoint``.
``{"quotas": {"ml.m5.large": 1}}``
    the account's "INSTANCE-TYPE for endpoint usage" quota: CreateEndpoint/UpdateEndpoint asking
    for more instances than are left fail with ResourceLimitExceeded, worded as AWS words it.
``{"ping_fail": ["substring-of-image"]}``
    instances of a matching image never pass the ping check (a shortcut: a real image whose
    model fails to load does the same).
``{"startup_seconds": 5}``
    how long an instance has to pass ``/ping`` when its variant sets no
    ContainerStartupHealthCheckTimeoutInSeconds (whose minimum, 60 s, is long for a test).
``{"transition_seconds": 2.5}``
    an endpoint stays at least this long in Creating / Updating (to interrupt a deploy there).

Each POST replaces the faults given in it; ``POST /_emulator/reset`` clears all of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..faults import Fault, parse_errors, take

#: code -> (HTTP status, default message). SageMaker's control plane sends 400 for client
#: errors including throttling; InternalFailure / ServiceUnavailable are its 5xx.
ERRORS = {
    "ThrottlingException": (400, "Rate exceeded"),
    "ResourceLimitExceeded": (400, "The account-level service limit has been exceeded."),
    "ValidationException": (400, "The request is invalid."),
    "AccessDeniedException": (400, "User: arn:aws:iam::123456789012:user/mlsv-test is not "
                                   "authorized to perform: sagemaker:{operation} because no "
                                   "identity-based policy allows the sagemaker:{operation} action"),
    "ResourceNotFound": (400, "Resource not found."),
    "ResourceInUse": (400, "Resource is in use."),
    "InternalFailure": (500, "We encountered an internal error. Please try again."),
    "ServiceUnavailable": (503, "The service is unavailable. Please try again later."),
    # SageMaker Runtime (InvokeEndpoint)
    "ValidationError": (400, "The request is invalid."),
    "ModelError": (424, "Received server error (500) from primary with message \"injected\"."),
    "ModelNotReadyException": (429, "Model is not ready."),
    "InternalDependencyException": (530, "Internal dependency failure."),
}


@dataclass
class Faults:
    errors: list[Fault] = field(default_factory=list)
    quotas: dict[str, int] = field(default_factory=dict)
    ping_fail: list[str] = field(default_factory=list)
    transition_seconds: float = 0.0
    startup_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, spec: dict) -> None:
        """Apply a ``POST /_emulator/faults`` body (``ValueError`` naming what is wrong)."""
        unknown = set(spec) - {"errors", "quotas", "ping_fail", "transition_seconds",
                               "startup_seconds"}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        with self._lock:
            if "errors" in spec:
                self.errors = parse_errors(spec["errors"], ERRORS)
            if "quotas" in spec:
                self.quotas = {str(k): int(v) for k, v in spec["quotas"].items()}
            if "ping_fail" in spec:
                self.ping_fail = [str(s) for s in spec["ping_fail"]]
            if "transition_seconds" in spec:
                self.transition_seconds = float(spec["transition_seconds"])
            if "startup_seconds" in spec:
                self.startup_seconds = float(spec["startup_seconds"])

    def take(self, operation: str) -> tuple[str, int, str] | None:
        """The (code, status, message) this call must fail with, consuming one count."""
        with self._lock:
            fault = take(self.errors, operation)
        if fault is None:
            return None
        status, default = ERRORS[fault.code]
        return fault.code, status, (fault.message or default).replace("{operation}", operation)

    def pings_fail(self, image: str) -> bool:
        return any(part in image for part in self.ping_fail)

    def snapshot(self) -> dict:
        with self._lock:
            return {"errors": [vars(f) for f in self.errors], "quotas": dict(self.quotas),
                    "ping_fail": list(self.ping_fail),
                    "transition_seconds": self.transition_seconds,
                    "startup_seconds": self.startup_seconds}
