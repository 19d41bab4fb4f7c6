"""The one step of an azureml deploy or rollback (``mlserve.adapters.phases`` runs it).

prepare
    Nothing to do when the deployment taking the traffic carries this release and shape (only
    Get and List were called). An endpoint or deployment left Creating/Updating by a killed
    command is waited for first (re-attached). Otherwise a deployment that already holds this
    release (the one a rollback left, or a killed deploy's) is reused; else the image
    ``REGISTRY/REPOSITORY:RELEASE`` is pushed (a rollback pushes nothing), the endpoint created
    on a first deploy (key auth), and the release created as the deployment that takes no
    traffic (``blue`` or ``green``; an older release there is replaced), recorded in the journal
    before the long wait. A deployment that fails (its container crashes, its liveness or
    readiness probe never answers) is exit 1 with Azure's error: traffic never moved. Then the
    smoke cases go to the new deployment alone (``azureml-model-deployment``).
activate
    The endpoint's traffic: 100% to the new deployment, 0% to the other.
finish
    Nothing: the previous deployment is kept with no traffic for ``rollback``.
abort
    Traffic back if it moved; a first deploy's endpoint deleted; otherwise the deployment this
    step created deleted (it never took traffic).
"""

from __future__ import annotations

import time
from typing import Any

from ...errors import DeployError, ProviderError
from ..phases import prepare_or_undo
from ..pushed_image import push_release
from ..base import Context, Observed, ReleaseSpec
from . import (MOVING, ROUTES, SLOTS, TAG_DEPLOYMENT, TAG_RELEASE, TAG_SHAPE, Scorer,
               endpoint_name, environment, image_ref, instance_count, instance_type, serving,
               shape, state_of, tag)


class AzureMLStep:
    label = "azureml"

    def __init__(self, ctx: Context, adapter: Any, release: ReleaseSpec,
                 observed: Observed) -> None:
        self.ctx, self.adapter, self.release, self.observed = ctx, adapter, release, observed
        self.azure = adapter.session(ctx)
        self.endpoint = endpoint_name(ctx)
        self.previous = observed.release
        self.old_slot: str | None = observed.extra.get("serving")
        self.slot: str | None = None
        self.image: str | None = None
        self.digest: str | None = None
        self.created_endpoint = False
        self.created_slot: str | None = None
        self.shifted = False
        self.deadline = time.monotonic() + ctx.target.health_timeout

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self) -> bool:
        """See the module docstring; a failure cleans up what this step made, then raises."""
        return prepare_or_undo(self, self._prepare, self.ctx.reporter)

    def _prepare(self) -> bool:
        ctx, rid = self.ctx, self.release.release_id
        self.image = image_ref(ctx, rid)
        want = shape(ctx, self.release, self.image)
        endpoint, deployments = self._settled()
        live = serving(endpoint, deployments) if endpoint is not None else None
        self.old_slot = live.name if live is not None else None
        self.previous = tag(live, TAG_RELEASE) if live is not None else None
        if live is not None and tag(live, TAG_RELEASE) == rid and tag(live, TAG_SHAPE) == want \
                and state_of(live) == "Succeeded":
            ctx.reporter.step(f"{rid} already serves on endpoint {self.endpoint} "
                              f"(deployment {live.name}): nothing to do")
            return False
        ready = next((d for d in deployments if d is not live and tag(d, TAG_RELEASE) == rid
                      and tag(d, TAG_SHAPE) == want
                      and state_of(d) == "Succeeded"), None)
        if ready is not None:
            ctx.reporter.step(f"deployment {ready.name} holds {rid} already: reusing it")
            self.slot = ready.name
        else:
            self.digest = push_release(ctx, self.release, self.image)
            if endpoint is None:
                self._create_endpoint()
            self.slot = next((s for s in SLOTS if s != self.old_slot), SLOTS[0])
            self._create_deployment(want)
        self._smoke()
        return True

    def _settled(self) -> tuple[Any, list]:
        """The endpoint and its deployments once nothing of them is Creating/Updating (an
        earlier command's operation is waited out: re-attached)."""
        with self.ctx.reporter.progress(f"reading endpoint {self.endpoint}") as progress:
            while True:
                found, self.adapter.observed_read = self.adapter.observed_read, None
                endpoint, deployments = found or self.adapter.read_or_none(self.ctx)
                moving = [f"endpoint {self.endpoint} {state_of(endpoint)}"] \
                    if endpoint is not None and state_of(endpoint) in MOVING else []
                moving += [f"deployment {d.name} {state_of(d)}" for d in deployments
                           if state_of(d) in MOVING]
                if not moving:
                    return endpoint, deployments
                progress.log(", ".join(moving) + ": left so by an earlier command, waiting")
                if time.monotonic() > self.deadline:
                    raise DeployError(f"{', '.join(moving)} after the target's health_timeout",
                                      fix="see `mlserve status`; deploy again later")
                time.sleep(1)

    def _create_endpoint(self) -> None:
        ctx, azure, name = self.ctx, self.azure, self.endpoint
        from azure.ai.ml.entities import ManagedOnlineEndpoint
        ctx.reporter.step(f"creating endpoint {name} (key auth)")
        entity = ManagedOnlineEndpoint(name=name, auth_mode="key",
                                       tags={TAG_DEPLOYMENT: ctx.identity},
                                       description=f"mlserve: {ctx.identity}")
        ctx.record("endpoint", name, endpoint=name, workspace=ctx.target.workspace)
        poller = azure.call(f"create endpoint {name}",
                            lambda: azure.ml.online_endpoints.begin_create_or_update(entity))
        self.created_endpoint = True
        with ctx.reporter.progress(f"waiting for endpoint {name}") as progress:
            created = azure.wait(f"create endpoint {name}", poller, self.deadline, progress)
        # the scoring URI is known once the endpoint exists: the deploy reports it
        self.observed.url = getattr(created, "scoring_uri", None) or self.observed.url

    def _create_deployment(self, want: str) -> None:
        ctx, azure, rid, slot = self.ctx, self.azure, self.release.release_id, self.slot
        from azure.ai.ml.entities import Environment, ManagedOnlineDeployment
        snapshot = self.release.snapshot
        entity = ManagedOnlineDeployment(
            name=slot, endpoint_name=self.endpoint,
            environment=Environment(image=self.image, inference_config=ROUTES),
            instance_type=instance_type(ctx, snapshot), instance_count=instance_count(snapshot),
            environment_variables=environment(ctx, self.release),
            tags={TAG_DEPLOYMENT: ctx.identity, TAG_RELEASE: rid, TAG_SHAPE: want})
        ctx.reporter.step(f"creating deployment {slot} of endpoint {self.endpoint} with {rid} "
                          f"({entity.instance_count} x {entity.instance_type}; no traffic yet)")
        ctx.record("deployment", f"{self.endpoint}/{slot}", endpoint=self.endpoint,
                   deployment=slot, image=self.image)
        self.created_slot = slot

        def state() -> str:
            found = azure.ml.online_deployments.get(slot, self.endpoint)
            return f"deployment {slot}: {state_of(found)}"
        poller = azure.call(f"create deployment {slot}", lambda: azure.ml.online_deployments
                            .begin_create_or_update(entity))
        with ctx.reporter.progress(f"waiting for deployment {slot} to pass its probes") as progress:
            try:
                azure.wait(f"create deployment {slot}", poller, self.deadline, progress, state)
            except DeployError:
                progress.failed()
                raise
            except ProviderError as exc:
                progress.failed()
                raise DeployError(f"release {rid} failed on endpoint {self.endpoint} (deployment "
                                  f"{slot}): {getattr(exc, 'message', exc)}",
                                  fix="fix the model (see `mlserve logs`) and deploy again; "
                                      "traffic never moved to it") from None

    def _smoke(self) -> None:
        cases = self.release.snapshot.get("smoke") or []
        if not cases:
            return
        from ...checks import run_smoke
        from ...manifest import SmokeCase
        self.ctx.reporter.step(f"running {len(cases)} smoke case(s) against deployment "
                               f"{self.slot} alone")
        scorer = Scorer(self.azure, self.endpoint, self.slot)
        try:
            reason = run_smoke(scorer, [SmokeCase.model_validate(c) for c in cases])
        finally:
            scorer.close()
        if reason is not None:
            raise DeployError(f"release {self.release.release_id} answers on deployment "
                              f"{self.slot} of endpoint {self.endpoint}, but {reason}",
                              fix="fix the model or the smoke case and deploy again; traffic "
                                  "never moved to it")

    # -- activate, finish, abort -------------------------------------------------------------
    def activate(self) -> None:
        self._traffic(self.slot, "shifting all traffic")
        self.shifted = True

    def _traffic(self, slot: str | None, what: str) -> None:
        ctx, azure, name = self.ctx, self.azure, self.endpoint
        endpoint = azure.call(f"read endpoint {name}", lambda: azure.ml.online_endpoints.get(name))
        traffic = {n: 0 for n in endpoint.traffic or {}}
        traffic[slot] = 100
        endpoint.traffic = traffic
        ctx.reporter.step(f"{what} of endpoint {name} to deployment {slot}")
        with ctx.reporter.progress(f"updating the traffic of endpoint {name}") as progress:
            poller = azure.call(f"update the traffic of endpoint {name}",
                                lambda: azure.ml.online_endpoints.begin_create_or_update(endpoint))
            azure.wait(f"update the traffic of endpoint {name}", poller,
                       time.monotonic() + ctx.target.health_timeout, progress)

    def finish(self) -> None:
        """The previous deployment stays, with no traffic, for ``mlserve rollback``."""

    def abort(self) -> None:
        ctx, azure = self.ctx, self.azure
        deadline = time.monotonic() + ctx.target.health_timeout
        if self.shifted and self.old_slot:
            self._traffic(self.old_slot, "shifting the traffic back")
            self.shifted = False
        if self.created_endpoint:
            ctx.reporter.step(f"deleting endpoint {self.endpoint} (it never served)")
            poller = azure.call(f"delete endpoint {self.endpoint}",
                                lambda: azure.ml.online_endpoints.begin_delete(self.endpoint))
            azure.wait(f"delete endpoint {self.endpoint}", poller, deadline)
            self.created_endpoint = False
            self.created_slot = None
        elif self.created_slot and not self.shifted:
            slot = self.created_slot
            ctx.reporter.step(f"deleting deployment {slot} (it never took traffic)")
            poller = azure.call(f"delete deployment {slot}", lambda: azure.ml.online_deployments
                                .begin_delete(slot, self.endpoint))
            azure.wait(f"delete deployment {slot}", poller, deadline)
            self.created_slot = None
