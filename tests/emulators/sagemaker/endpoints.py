"""Endpoints and their lifecycle, as DescribeEndpoint shows it:

``CreateEndpoint``  Creating → InService (every variant's instances pass ``/ping``) or Failed
``UpdateEndpoint``  Updating (a new fleet beside the old, which keeps serving) → traffic shifted
                    (all at once, canary or linear, ``BlueGreenUpdatePolicy``) → InService on the
                    new config; if the new fleet fails its health check, or an alarm of
                    ``AutoRollbackConfiguration`` fires while baking, RollingBack → InService on
                    the old config with ``FailureReason``
``DeleteEndpoint``  Deleting → gone (refused while Creating / Updating / RollingBack)

Each transition runs in a worker thread; reads see the state as it moves.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, validation
from .fleet import Docker, Instance

log = logging.getLogger("sagemaker-emulator")

#: SageMaker's wording when a variant's container does not pass the ping check.
PING_FAILED = ("The primary container for production variant {variant} did not pass the ping "
               "health check. Please check CloudWatch logs for this endpoint.")
IN_PROGRESS = ("SystemUpdating", "Creating", "Updating", "RollingBack", "Deleting")
#: how long the emulator waits for /ping when the variant sets no
#: ContainerStartupHealthCheckTimeoutInSeconds (SageMaker waits up to 8 minutes; tests should
#: not)
DEFAULT_STARTUP_TIMEOUT = 60.0


@dataclass
class Fleet:
    """One production variant's running instances."""

    variant: dict           # the ProductionVariant as the endpoint config holds it
    image: str
    instances: list[Instance] = field(default_factory=list)
    weight: float = 1.0
    _next: int = 0

    @property
    def name(self) -> str:
        return self.variant["VariantName"]

    def pick(self) -> Instance:
        self._next = (self._next + 1) % len(self.instances)
        return self.instances[self._next]


@dataclass
class Endpoint:
    name: str
    arn: str
    config_name: str
    status: str = "Creating"
    failure_reason: str | None = None
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    serving: list[Fleet] = field(default_factory=list)     # take traffic now
    pending: list[Fleet] = field(default_factory=list)     # a new fleet being started
    shifted: float = 0.0            # the share of traffic the pending fleet takes (canary)
    pending_config: str | None = None
    last_deployment: dict | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def describe(self, configs: dict[str, dict]) -> dict:
        config = configs.get(self.config_name, {})
        out: dict[str, Any] = {
            "EndpointName": self.name, "EndpointArn": self.arn,
            "EndpointConfigName": self.config_name, "EndpointStatus": self.status,
            "CreationTime": self.created, "LastModifiedTime": self.modified,
        }
        if self.status != "Creating" or self.serving:
            out["ProductionVariants"] = [_variant_summary(f) for f in self.serving] or \
                [_variant_summary(Fleet(v, "")) for v in config.get("ProductionVariants", [])]
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.last_deployment:
            out["LastDeploymentConfig"] = self.last_deployment
        if self.pending_config:
            out["PendingDeploymentSummary"] = {
                "EndpointConfigName": self.pending_config, "StartTime": self.modified,
                "ProductionVariants": [_variant_summary(f, "Creating") for f in self.pending]}
        return out


def _variant_summary(fleet: Fleet, status: str | None = None) -> dict:
    variant = fleet.variant
    out: dict[str, Any] = {"VariantName": variant["VariantName"],
                           "CurrentWeight": float(variant.get("InitialVariantWeight", 1.0)),
                           "DesiredWeight": float(variant.get("InitialVariantWeight", 1.0))}
    if fleet.image:
        out["DeployedImages"] = [{"SpecifiedImage": fleet.image, "ResolvedImage": fleet.image,
                                  "ResolutionTime": time.time()}]
    if "ServerlessConfig" in variant:
        out["CurrentServerlessConfig"] = variant["ServerlessConfig"]
        out["DesiredServerlessConfig"] = variant["ServerlessConfig"]
    else:
        count = variant.get("InitialInstanceCount", 1)
        out["CurrentInstanceCount"] = len(fleet.instances) if fleet.instances else 0
        out["DesiredInstanceCount"] = count
    if status:
        out["VariantStatus"] = [{"Status": status, "StartTime": time.time()}]
    return out


class Lifecycle:
    """Starts and stops fleets for endpoints; ``store`` is the emulator's state (models,
    configs, endpoints, faults, lock)."""

    def __init__(self, store: Any, docker: Docker, startup_timeout: float,
                 image_resolver) -> None:
        self.store = store
        self.docker = docker
        self.startup_timeout = startup_timeout
        self.resolve = image_resolver

    # -- provisioning ------------------------------------------------------------------------

    def provision(self, endpoint: Endpoint, config: dict) -> list[Fleet] | str:
        """Start every variant of ``config``; the fleets, or SageMaker's failure reason (what
        was started is stopped again)."""
        fleets: list[Fleet] = []
        try:
            for variant in config["ProductionVariants"]:
                fleet, reason = self._start_variant(endpoint, variant)
                fleets.append(fleet)
                if reason:
                    self.stop(fleets)
                    return reason
            return fleets
        except Exception as exc:  # the engine refused: report it like a platform failure
            log.exception("provisioning %s failed", endpoint.name)
            self.stop(fleets)
            return f"Failed to start the container for {endpoint.name}: {exc}"

    def _start_variant(self, endpoint: Endpoint, variant: dict) -> tuple[Fleet, str | None]:
        model = self.store.models.get(variant["ModelName"])
        if model is None:
            return Fleet(variant, ""), (f"Could not find model \"{variant['ModelName']}\" "
                                        f"for production variant {variant['VariantName']}.")
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        image = container.get("Image", "")
        fleet = Fleet(variant, image, weight=float(variant.get("InitialVariantWeight", 1.0)))
        try:
            self.docker.pull(self.resolve(image))
        except Exception as exc:
            return fleet, (f"Failed to pull the image {image} for production variant "
                           f"{variant['VariantName']}: {str(exc)[:300]}")
        serverless = variant.get("ServerlessConfig")
        count = 1 if serverless else int(variant.get("InitialInstanceCount", 1))
        memory = serverless.get("MemorySizeInMB") if serverless else None
        timeout = float(variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
                        or self.store.faults.startup_seconds or self.startup_timeout)
        for _ in range(count):
            instance = self.docker.start(endpoint.name, variant["VariantName"],
                                         self.resolve(image), container.get("Environment") or {},
                                         memory)
            fleet.instances.append(instance)
        for instance in fleet.instances:
            reason = self.docker.wait_healthy(instance, timeout, endpoint.cancelled.is_set)
            if reason is None and self.store.faults.pings_fail(image):
                reason = "ping failure injected by the test (ping_fail)"
            if reason:
                log.warning("%s %s: %s", endpoint.name, instance.id, reason)
                return fleet, PING_FAILED.format(variant=variant["VariantName"])
        return fleet, None

    def stop(self, fleets: list[Fleet], drain_seconds: float = 0.0) -> None:
        for fleet in fleets:
            for instance in fleet.instances:
                self.docker.stop(instance, drain_seconds)

    def _hold(self, since: float) -> None:
        """Stay in a transition state at least ``transition_seconds`` (a fault knob)."""
        left = self.store.faults.transition_seconds - (time.monotonic() - since)
        if left > 0:
            time.sleep(left)

    # -- transitions -------------------------------------------------------------------------

    def create(self, endpoint: Endpoint) -> None:
        threading.Thread(target=self._create, args=(endpoint,), daemon=True).start()

    def _create(self, endpoint: Endpoint) -> None:
        began = time.monotonic()
        config = self.store.configs.get(endpoint.config_name)
        result = self.provision(endpoint, config) if config else \
            f'Could not find endpoint configuration "{endpoint.config_name}".'
        self._hold(began)
        with self.store.lock:
            if endpoint.cancelled.is_set():
                self.stop(result if isinstance(result, list) else [])
                return
            if isinstance(result, str):
                endpoint.status, endpoint.failure_reason = "Failed", result
            else:
                endpoint.serving, endpoint.status = result, "InService"
            endpoint.modified = time.time()

    def update(self, endpoint: Endpoint, config_name: str, deployment: dict | None) -> None:
        endpoint.status, endpoint.pending_config = "Updating", config_name
        endpoint.failure_reason, endpoint.modified = None, time.time()
        endpoint.last_deployment = deployment
        threading.Thread(target=self._update, args=(endpoint, config_name, deployment or {}),
                         daemon=True).start()

    def _update(self, endpoint: Endpoint, config_name: str, deployment: dict) -> None:
        began = time.monotonic()
        config = self.store.configs.get(config_name)
        result = self.provision(endpoint, config) if config else \
            f'Could not find endpoint configuration "{config_name}".'
        if isinstance(result, list):
            with self.store.lock:
                endpoint.pending = result
            result = self._shift(endpoint, result, deployment)
        self._hold(began)
        if isinstance(result, str):
            with self.store.lock:          # traffic back to the old fleet first, then stop
                endpoint.status, started = "RollingBack", endpoint.pending
                endpoint.pending, endpoint.shifted = [], 0.0
            self.stop(started, drain_seconds=60)
            time.sleep(0.2)          # RollingBack is visible to a poller
            with self.store.lock:
                endpoint.pending_config = None
                endpoint.status, endpoint.failure_reason = "InService", result
                endpoint.modified = time.time()
            return
        policy = deployment.get("BlueGreenUpdatePolicy") or {}
        with self.store.lock:
            if endpoint.cancelled.is_set():          # reset while updating
                self.stop(result)
                return
            old, endpoint.serving = endpoint.serving, result
            endpoint.pending, endpoint.shifted, endpoint.pending_config = [], 0.0, None
            endpoint.config_name = config_name
        time.sleep(float(policy.get("TerminationWaitInSeconds") or 0))
        self.stop(old, drain_seconds=60)           # InvokeEndpoint's own timeout
        with self.store.lock:
            endpoint.status, endpoint.modified = "InService", time.time()

    def _shift(self, endpoint: Endpoint, fleets: list[Fleet], deployment: dict) -> list[Fleet] | str:
        """Move traffic to the new fleet as the blue/green policy says; a failure reason if an
        auto-rollback alarm fires while baking."""
        policy = deployment.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {"Type": "ALL_AT_ONCE"}
        wait = float(routing.get("WaitIntervalInSeconds") or 0)
        steps: list[float] = []
        if routing["Type"] == "CANARY":
            steps = [_share(routing.get("CanarySize"), fleets)]
        elif routing["Type"] == "LINEAR":
            step = _share(routing.get("LinearStepSize"), fleets)
            steps = [min(1.0, step * i) for i in range(1, int(1 / max(step, 0.01)) + 1)]
        alarms = [a["AlarmName"] for a in
                  (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms") or []]
        for share in steps:
            with self.store.lock:
                endpoint.shifted = share
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                fired = self.store.alarms_firing(alarms)
                if fired:
                    return (f"Endpoint update was rolled back because the alarm(s) "
                            f"{', '.join(fired)} went into ALARM state.")
                time.sleep(0.1)
        return fleets

    def delete(self, endpoint: Endpoint) -> None:
        endpoint.status = "Deleting"
        endpoint.cancelled.set()

        def work() -> None:
            self.stop(endpoint.serving + endpoint.pending)
            with self.store.lock:
                if self.store.endpoints.get(endpoint.name) is endpoint:
                    del self.store.endpoints[endpoint.name]

        threading.Thread(target=work, daemon=True).start()

    # -- traffic -----------------------------------------------------------------------------

    def route(self, endpoint: Endpoint, target_variant: str | None) -> tuple[Fleet, Instance]:
        with self.store.lock:
            fleets = [f for f in endpoint.serving if f.instances]
            if endpoint.shifted and endpoint.pending and random.random() < endpoint.shifted:
                fleets = [f for f in endpoint.pending if f.instances] or fleets
            if target_variant:
                fleets = [f for f in fleets if f.name == target_variant]
                if not fleets:
                    raise ApiError("ValidationError", f"Variant {target_variant} not found for "
                                   f"endpoint {endpoint.name}.")
            if not fleets:
                raise ApiError("ValidationError", f"Endpoint {endpoint.name} is not in service.")
            fleet = random.choices(fleets, weights=[max(f.weight, 0.0001) for f in fleets])[0]
            limit = (fleet.variant.get("ServerlessConfig") or {}).get("MaxConcurrency")
            if limit and sum(i.inflight for i in fleet.instances) >= limit:
                # Serverless Inference answers requests beyond MaxConcurrency with throttling
                raise ApiError("ThrottlingException", f"Rate exceeded: variant {fleet.name} of "
                               f"endpoint {endpoint.name} is at its MaxConcurrency ({limit}).")
            instance = fleet.pick()
            instance.lease(True)          # the caller gives it back once answered
            return fleet, instance


def _share(capacity: dict | None, fleets: list[Fleet]) -> float:
    """The share of traffic a CapacitySize (PERCENT or INSTANCE_COUNT) stands for."""
    if not capacity:
        return 0.1
    value = float(capacity.get("Value", 10))
    if capacity.get("Type") == "INSTANCE_COUNT":
        total = sum(len(f.instances) for f in fleets) or 1
        return min(1.0, value / total)
    return min(1.0, value / 100.0)


def check_deletable(endpoint: Endpoint) -> None:
    if endpoint.status in IN_PROGRESS:
        raise validation(f'Cannot delete in-progress endpoint "{endpoint.arn}".')
