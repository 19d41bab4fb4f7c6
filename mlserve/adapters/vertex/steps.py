"""The one step of a vertex deploy or rollback (``mlserve.adapters.phases`` runs it).

prepare
    Nothing to do when the endpoint's only deployed model is this release's Model with all the
    traffic (same ID: same release, image and options) and the journal says it serves:
    ``observe``'s GetEndpoint is the only call. Operations an earlier, killed command left
    running on the endpoint (ListOperations) are waited for first (re-attached); a release
    such a command left serving, never checked, gets its smoke cases. Otherwise: the image
    ``REPOSITORY:RELEASE`` is built and pushed (a rollback pushes nothing), the Model is
    uploaded (reused when it exists: a rollback finds the one it left) with the container spec
    (image, port 8080, health and predict routes, environment) and the endpoint created when
    missing. The Model is deployed beside the serving one with 0% of the traffic
    (``DeployModel``: machine type, accelerator, min/max replicas); Vertex starts its replicas
    and waits for their health route. A model that never becomes ready fails the operation:
    exit 1 with Vertex's message, traffic never shifted. A deployed model of this Model left
    with no traffic by a killed command is reused. Then ``UpdateEndpoint`` gives it 100% of the
    traffic and the smoke cases go through ``predict``; a failing case shifts the traffic back
    before the deploy fails.
activate
    Nothing: the traffic moved in prepare, once the new model was ready (a shift takes one
    call, and the smoke cases must reach the new model, which ``predict`` only does by
    traffic).
finish
    The old deployed models are undeployed (their Models are kept for ``rollback``).
abort
    The traffic goes back to what it was, the deployed model this step made is undeployed, and
    the Model and endpoint it created are deleted.
"""

from __future__ import annotations

import time

from ...errors import DeployError, MlserveError, ProviderError
from ..base import Context, Observed, ReleaseSpec
from . import (CONTAINER_PORT, HEALTH_ROUTE, PREDICT_ROUTE, endpoint_id, image_ref, labels,
               machine, model_id, predictor, replicas)
from .api import Gcp
from ..phases import prepare_or_undo
from ..pushed_image import push_release


def undeploy(gcp: Gcp, endpoint: str, deployed_id: str, split: dict[str, int],
             deadline: float) -> None:
    """UndeployModel ``deployed_id``, giving the rest ``split``; waits for the operation."""
    op = gcp.call("Endpoint", "UndeployModel", endpoint=endpoint, deployed_model_id=deployed_id,
                  traffic_split=split)
    gcp.wait(op, "UndeployModel", deadline)


class VertexStep:
    label = "vertex"

    def __init__(self, ctx: Context, adapter, release: ReleaseSpec, observed: Observed) -> None:
        self.ctx, self.adapter, self.release, self.observed = ctx, adapter, release, observed
        self.gcp: Gcp = adapter.session(ctx)
        self.endpoint = adapter.endpoint_name(ctx)
        self.previous = observed.release
        self.old_split: dict[str, int] = dict(observed.extra.get("traffic") or {})
        self.image: str | None = None
        self.digest: str | None = None
        self.model_name: str | None = None
        self.deployed_id: str | None = None
        self.made_deployed = False
        self.made_model = False
        self.made_endpoint = False
        self.shifted = False
        self.deploying = None       # the DeployModel operation this step waits for
        self.others: list[str] = []  # deployed models that served before: finish undeploys them

    def deadline(self) -> float:
        return time.monotonic() + self.ctx.target.health_timeout

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self) -> bool:
        """See the module docstring; a failure cleans up what this step made, then raises."""
        return prepare_or_undo(self, self._prepare, self.ctx.reporter)

    def _prepare(self) -> bool:
        ctx, rid, gcp = self.ctx, self.release.release_id, self.gcp
        self.image = image_ref(ctx, rid)
        self.model_name = f"{gcp.location}/models/{model_id(ctx, self.release, self.image)}"
        endpoint = self.adapter.last_endpoint if self.observed.extra else None
        if self._serves(endpoint) and ctx.current is not None and \
                ctx.current.release_id == rid:
            ctx.reporter.step(f"{rid} already serves on endpoint {endpoint_id(ctx)}: "
                              "nothing to do")
            return False
        reattached = endpoint is not None and self._wait_earlier()
        if reattached:
            endpoint = self.adapter.get_endpoint(ctx)
        deployed = (endpoint or {}).get("deployedModels") or []
        split = {k: int(v) for k, v in ((endpoint or {}).get("trafficSplit") or {}).items()}
        self.old_split = {k: v for k, v in split.items() if v}
        mine = [d["id"] for d in deployed if d.get("model", "").split("@")[0] == self.model_name]
        if self._serves(endpoint):
            self.deployed_id = mine[0]
            ctx.reporter.step(f"{rid} serves on endpoint {endpoint_id(ctx)}, deployed by an "
                              "earlier command that never checked it: checking it")
            self.previous = None            # the journal never recorded it as serving
            return self._checked()
        self.others = [d["id"] for d in deployed if split.get(d["id"])]
        for stale in [d for d in deployed if not split.get(d["id"]) and d["id"] not in mine[:1]]:
            ctx.reporter.step(f"undeploying {stale['id']}, left without traffic by an earlier "
                              "command")
            undeploy(gcp, self.endpoint, stale["id"], self.old_split, self.deadline())
        self.digest = push_release(ctx, self.release, self.image)
        self._model()
        if endpoint is None:
            self._create_endpoint()
        if mine and not split.get(mine[0]):
            self.deployed_id = mine[0]
            ctx.reporter.step(f"deployed model {self.deployed_id} of {rid}, left ready by an "
                              "earlier command: reusing it")
        elif not mine:
            self._deploy()
        if self.old_split or not self.made_deployed:    # a first DeployModel took it all
            self._shift({self.deployed_id: 100, **{k: 0 for k in self.old_split
                                                   if k != self.deployed_id}})
        return self._checked()

    def _serves(self, endpoint: dict | None) -> bool:
        """This release's Model is the endpoint's only deployed model, with all the traffic."""
        deployed = (endpoint or {}).get("deployedModels") or []
        split = (endpoint or {}).get("trafficSplit") or {}
        return len(deployed) == 1 and deployed[0].get("model", "").split("@")[0] == \
            self.model_name and int(split.get(deployed[0]["id"], 0)) == 100

    def _wait_earlier(self) -> bool:
        """Wait for operations still running on the endpoint (a killed command's); True when
        there were some."""
        running, token = [], ""
        while True:
            page = self.gcp.call("Endpoint", "ListOperations",
                                 request={"name": self.endpoint, "page_token": token})
            running += [op for op in page.operations if not op.done]
            token = page.next_page_token
            if not token:
                break
        for op in running:
            self.ctx.reporter.step(f"operation {op.name.rsplit('/', 1)[-1]} of an earlier "
                                   "command is still running on the endpoint: waiting for it")
            deadline = self.deadline()
            with self.ctx.reporter.progress("waiting for the earlier operation") as progress:
                while True:
                    self.gcp.calls.append("Operations.GetOperation")
                    found = self.gcp.client("Endpoint").get_operation(request={"name": op.name})
                    if found.done:
                        break
                    if time.monotonic() > deadline:
                        progress.failed()
                        raise DeployError(f"an earlier operation on endpoint "
                                          f"{endpoint_id(self.ctx)} was still running after "
                                          f"{self.ctx.target.health_timeout:g}s",
                                          fix="see `mlserve status`; deploy again once it ends")
                    time.sleep(0.5)
        return bool(running)

    def _checked(self) -> bool:
        """The smoke cases through ``predict``; a failure shifts the traffic back."""
        rid = self.release.release_id
        reason = self._smoke()
        if reason is not None:
            shifted = self.shifted
            self._shift_back()
            raise DeployError(f"release {rid} answers on endpoint {endpoint_id(self.ctx)}, but "
                              f"{reason}", fix="fix the model or the smoke case and deploy again"
                              + ("; the previous release serves again" if shifted and
                                 self.old_split else ""))
        return True

    def _environment(self) -> list[dict]:
        env = dict(self.release.snapshot.get("env") or {})
        if self.ctx.target.secrets == "environment":
            env.update(self.ctx.secrets)
        env["MLSERVE_RELEASE"] = self.release.release_id
        return [{"name": k, "value": str(v)} for k, v in env.items()]

    def _model(self) -> None:
        ctx, gcp, rid = self.ctx, self.gcp, self.release.release_id
        try:
            gcp.call("Model", "GetModel", name=self.model_name)
            ctx.reporter.step(f"model {self.model_name.rsplit('/', 1)[-1]} exists: reusing it")
            return
        except ProviderError as exc:
            if "(NOT_FOUND)" not in exc.message:
                raise
        if self.release.bundle is None:
            raise DeployError(f"the model of release {rid} is gone from Vertex AI "
                              f"({self.model_name})", fix="deploy that release from its "
                              "sources instead (check out its commit, `mlserve deploy`)")
        short = self.model_name.rsplit("/", 1)[-1]
        ctx.reporter.step(f"uploading model {short}")
        op = gcp.call("Model", "UploadModel", request={
            "parent": gcp.location, "model_id": short, "model": {
                "display_name": short, "labels": labels(ctx, rid),
                "container_spec": {"image_uri": self.image, "env": self._environment(),
                                   "ports": [{"container_port": CONTAINER_PORT}],
                                   "predict_route": PREDICT_ROUTE,
                                   "health_route": HEALTH_ROUTE}}})
        self.made_model = True
        ctx.record("model", self.model_name, model=self.model_name, image=self.image)
        self._wait(op, "UploadModel", f"uploading model {short}")

    def _create_endpoint(self) -> None:
        ctx, gcp = self.ctx, self.gcp
        ctx.reporter.step(f"creating endpoint {endpoint_id(ctx)}")
        op = gcp.call("Endpoint", "CreateEndpoint", parent=gcp.location,
                      endpoint_id=endpoint_id(ctx),
                      endpoint={"display_name": endpoint_id(ctx), "labels": labels(ctx)})
        self.made_endpoint = True
        ctx.record("endpoint", self.endpoint, endpoint=self.endpoint)
        self._wait(op, "CreateEndpoint", f"creating endpoint {endpoint_id(ctx)}")

    def _deploy(self) -> None:
        ctx, gcp, snapshot = self.ctx, self.gcp, self.release.snapshot
        low, high = replicas(snapshot)
        spec = machine(ctx, snapshot)
        ctx.reporter.step(f"deploying {self.release.release_id} on endpoint {endpoint_id(ctx)} "
                          f"({spec['machine_type']}, {low}-{high} replicas) beside the serving "
                          "model, with no traffic yet")
        split = {"0": 0, **self.old_split} if self.old_split else {"0": 100}
        op = gcp.call("Endpoint", "DeployModel", endpoint=self.endpoint, traffic_split=split,
                      deployed_model={
                          "model": self.model_name, "display_name": self.model_name.rsplit(
                              "/", 1)[-1],
                          "dedicated_resources": {"machine_spec": spec,
                                                  "min_replica_count": low,
                                                  "max_replica_count": high}})
        ctx.record("deploy-operation", op.operation.name, endpoint=self.endpoint,
                   model=self.model_name)
        self.deploying = op
        try:
            result = self._wait(op, "DeployModel", "waiting for the new model to be ready")
            self.deploying = None
        except MlserveError as exc:
            self.deploying = None
            raise DeployError(f"release {self.release.release_id} did not become ready on "
                              f"endpoint {endpoint_id(ctx)}: {exc.message}" +
                              ("; the traffic never shifted: the previous release kept "
                               "serving" if self.old_split else ""),
                              fix="fix the model (see `mlserve logs`) and deploy again") from None
        self.deployed_id = result.deployed_model.id
        self.made_deployed = True

    def _wait(self, op, method: str, what: str):
        with self.ctx.reporter.progress(what) as progress:
            result = self.gcp.wait(op, method, self.deadline())
            if result is None:
                progress.failed()
                raise DeployError(f"{method} on endpoint {endpoint_id(self.ctx)} did not finish "
                                  f"in {self.ctx.target.health_timeout:g}s",
                                  fix="see `mlserve status` and the endpoint's logs; raise the "
                                      "target's health_timeout if Vertex AI is just slow")
        return result

    def _shift(self, split: dict[str, int]) -> None:
        if {k: v for k, v in split.items() if v} == self.old_split:
            return
        self.ctx.reporter.step(f"shifting 100% of the traffic on endpoint "
                               f"{endpoint_id(self.ctx)} to {self.deployed_id}")
        self.gcp.call("Endpoint", "UpdateEndpoint", update_mask={"paths": ["traffic_split"]},
                      endpoint={"name": self.endpoint, "traffic_split": split})
        self.shifted = True

    def _shift_back(self) -> None:
        if self.shifted and self.old_split:
            self.ctx.reporter.step(f"shifting the traffic on endpoint {endpoint_id(self.ctx)} "
                                   "back to the previous release")
            back = {**self.old_split, self.deployed_id: 0}
            self.gcp.call("Endpoint", "UpdateEndpoint", update_mask={"paths": ["traffic_split"]},
                          endpoint={"name": self.endpoint, "traffic_split": back})
        self.shifted = False

    def _smoke(self) -> str | None:
        cases = self.release.snapshot.get("smoke") or []
        if not cases:
            return None
        from ...checks import run_smoke
        from ...manifest import SmokeCase
        self.ctx.reporter.step(f"running {len(cases)} smoke case(s) through predict")
        return run_smoke(predictor(self.gcp, self.endpoint),
                         [SmokeCase.model_validate(c) for c in cases])

    def _cancel_deploy(self, deadline: float) -> None:
        """A DeployModel interrupted while waiting (``--timeout``, Ctrl-C): cancelled, waited
        for, and its deployed model undeployed if it got there first."""
        op, self.deploying = self.deploying, None
        if op is None:
            return
        self.ctx.reporter.step("cancelling the deploy of the new model")
        self.gcp.call("Endpoint", "CancelOperation", request={"name": op.operation.name})
        try:
            result = self.gcp.wait(op, "DeployModel", deadline)
        except MlserveError:
            return                              # cancelled (or failed): nothing was deployed
        if result is not None:
            self.deployed_id, self.made_deployed = result.deployed_model.id, True

    # -- activate, finish, abort -------------------------------------------------------------
    def activate(self) -> None:
        """Nothing: the traffic moved in prepare (see the module docstring)."""

    def finish(self) -> None:
        """Undeploy the deployed models that served before (their Models stay for rollback)."""
        for other in self.others:
            if other != self.deployed_id:
                self.ctx.reporter.step(f"undeploying the previous deployed model {other}")
                undeploy(self.gcp, self.endpoint, other, {self.deployed_id: 100},
                         self.deadline())

    def abort(self) -> None:
        gcp, deadline = self.gcp, self.deadline()
        self._cancel_deploy(deadline)
        self._shift_back()
        if self.made_deployed and self.deployed_id:
            self.ctx.reporter.step(f"undeploying {self.deployed_id} (it never took the traffic)")
            undeploy(gcp, self.endpoint, self.deployed_id,
                     self.old_split if self.old_split else {}, deadline)
            self.made_deployed = False
        if self.made_endpoint and not self.old_split:
            endpoint = self.adapter.get_endpoint(self.ctx) or {}
            if not endpoint.get("deployedModels"):
                self.ctx.reporter.step(f"deleting endpoint {endpoint_id(self.ctx)} (it never "
                                       "served)")
                gcp.wait(gcp.call("Endpoint", "DeleteEndpoint", name=self.endpoint),
                         "DeleteEndpoint", deadline)
            self.made_endpoint = False
        if self.made_model:
            self.ctx.reporter.step(f"deleting model {self.model_name.rsplit('/', 1)[-1]}")
            gcp.wait(gcp.call("Model", "DeleteModel", name=self.model_name), "DeleteModel",
                     deadline)
            self.made_model = False
