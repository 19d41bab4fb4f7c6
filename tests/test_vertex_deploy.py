"""The ``vertex`` provider end to end: the real CLI and the real google-cloud-aiplatform SDK
(REST transport, Application Default Credentials) against the Vertex AI emulator
(tests/emulators/vertex: it runs each deployed model's image on the private dockerd under
Vertex's container contract, AIP_HTTP_PORT / AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE, and proxies
``predict``). Images are built FROM the local base image and pushed to the private registry
standing in for Artifact Registry.

One deployment walks through what users do, polled through ``predict`` in a thread with zero
failed predictions: deploy, a no-op deploy (reads only), an update (the new model deployed
beside the old, 100% of the traffic shifted, the old undeployed), a release whose model never
becomes ready (the traffic never shifts, exit 1), rollback, logs (Cloud Logging's
``entries.list`` as the emulator serves it from the containers' output), and delete with the
journal removed (found by labels). Then each Google error shape, a deploy killed during
DeployModel, a failing smoke case, secrets, and migrate sagemaker -> vertex.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (MLSERVE, MUST_NOT_LOAD, Poller, assert_secret_hidden, delete_targets,
                           migrate_json, read_until, run_cli, write_model)
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG

# the endpoint model of tests.helpers (write_model): its answer names its version, and
# MUST_NOT_LOAD fails its load()

ENDPOINT = "vxh-vx"


def make_project(root: Path, vx, target: dict | None = None, **top) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    if not (project / "model.py").exists():
        write_model(project, "v1")
    manifest = {"name": "vxh", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {"vx": {"provider": "vertex", **vx.target,
                                   "repository": f"{vx.registry.address}/mlsv-vx-hello",
                                   "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                   "health_timeout": 240, **(target or {})}}, **top}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def cli(capsys, project: Path, state: Path, *args: str):
    return run_cli(capsys, *args, "-f", str(project / "mlserve.yaml"), "--state", str(state))


class Vertex:
    """The SDK as a user's own code would use it against the emulator (ADC from the env)."""

    def __init__(self, vx) -> None:
        import google.auth
        from google.api_core.client_options import ClientOptions
        from google.cloud import aiplatform_v1
        credentials, _ = google.auth.default()
        options = ClientOptions(api_endpoint=vx.emulator.url)
        self.endpoints = aiplatform_v1.EndpointServiceClient(
            credentials=credentials, transport="rest", client_options=options)
        self.models = aiplatform_v1.ModelServiceClient(
            credentials=credentials, transport="rest", client_options=options)
        self.prediction = aiplatform_v1.PredictionServiceClient(
            credentials=credentials, transport="rest", client_options=options)
        self.location = f"projects/{vx.project}/locations/{vx.region}"

    def endpoint(self, name: str = ENDPOINT):
        return self.endpoints.get_endpoint(name=f"{self.location}/endpoints/{name}")

    def predict(self, name: str = ENDPOINT) -> dict:
        from google.protobuf import json_format, struct_pb2
        instance = json_format.ParseDict({"x": [1, 2]}, struct_pb2.Value())
        reply = self.prediction.predict(endpoint=f"{self.location}/endpoints/{name}",
                                        instances=[instance])
        return json_format.MessageToDict(type(reply).pb(reply))["predictions"][0]

    def everything(self) -> tuple[list, list]:
        return (list(self.endpoints.list_endpoints(parent=self.location)),
                list(self.models.list_models(parent=self.location)))


def methods(vx, since: int = 0) -> list[str]:
    return [c["method"] for c in vx.calls()[since:]]



@pytest.fixture
def vx(vertex_env, base_image):
    return vertex_env


def test_deploy_noop_update_unready_update_rollback_logs_and_delete(tmp_path, capsys, vx):
    project = make_project(tmp_path, vx, scaling={"min_replicas": 1, "max_replicas": 3})
    state = tmp_path / "state"
    first = cli(capsys, project, state, "deploy", "vx", "--json")
    assert first.code == 0, first.err
    api = Vertex(vx)
    assert api.predict()["version"] == "v1"
    (deployed,) = api.endpoint().deployed_models
    resources = deployed.dedicated_resources
    assert (resources.machine_spec.machine_type, resources.min_replica_count,
            resources.max_replica_count) == ("n1-standard-2", 1, 3)
    model = api.models.get_model(name=deployed.model)
    assert model.container_spec.health_route == "/health"
    assert model.labels["mlserve-deployment"] == "vxh_vx"

    status = cli(capsys, project, state, "status", "vx", "--json")
    assert status.code == 0 and json.loads(status.out)["status"] == "READY", status.out
    predicted = cli(capsys, project, state, "predict", "vx", "--input", '{"x": [3]}')
    assert predicted.code == 0 and '"y": [6]' in predicted.out, predicted.out + predicted.err

    seen = len(vx.calls())
    again = cli(capsys, project, state, "deploy", "vx", "--json")
    assert again.code == 0 and json.loads(again.out)["changed"] is False, again.err
    assert methods(vx, seen) == ["GetEndpoint"], methods(vx, seen)     # one read, no write

    with Poller(lambda: api.predict()["version"], interval=0.05) as poll:
        write_model(project, "v2")
        update = cli(capsys, project, state, "deploy", "vx")
        assert update.code == 0, update.err
        assert api.predict()["version"] == "v2"
        assert len(api.endpoint().deployed_models) == 1          # the old one undeployed

        write_model(project, "v3", MUST_NOT_LOAD)
        vx.faults(health_seconds=15)
        seen = len(vx.calls())
        broken = cli(capsys, project, state, "deploy", "vx")
        assert broken.code == 1, broken.err
        text = " ".join(broken.err.split())
        assert "never became ready" in text and "traffic never shifted" in text, text
        assert "Traceback" not in broken.err
        assert "UpdateEndpoint" not in methods(vx, seen)
        assert api.predict()["version"] == "v2"

        back = cli(capsys, project, state, "rollback", "vx")
        assert back.code == 0, back.err
        assert api.predict()["version"] == "v1"
    assert poll.failures == [] and set(poll.answers) >= {"v1", "v2"}, poll.failures[:3]
    assert "v3" not in poll.answers

    logs = cli(capsys, project, state, "logs", "vx", "--lines", "500")
    assert logs.code == 0 and "predicting" in logs.out, logs.out[-2000:] + logs.err

    shutil.rmtree(state)                                   # the journal is gone
    gone = cli(capsys, project, state, "delete", "vx", "--yes")
    assert gone.code == 0, gone.err
    assert api.everything() == ([], [])


@pytest.mark.parametrize("faults, target, code, words", [
    ({"errors": [{"method": "UploadModel", "status": "PERMISSION_DENIED", "count": None}]},
     {}, 3, ["PERMISSION_DENIED", "aiplatform.models.upload", "roles/aiplatform.user"]),
    ({"quotas": {"custom_model_serving_cpus": 0}}, {}, 1,
     ["custom_model_serving_cpus", "Quotas"]),
    ({}, {"machine_type": "n1-nope-3"}, 2, ["INVALID_ARGUMENT", 'Machine type "n1-nope-3"']),
    ({"errors": [{"method": "DeployModel", "status": "NOT_FOUND", "count": None}]}, {}, 1,
     ["NOT_FOUND", "check the target's project"]),
    ({"errors": [{"method": "CreateEndpoint", "status": "RESOURCE_EXHAUSTED", "count": None}]},
     {}, 1, ["RESOURCE_EXHAUSTED", "5 attempts"]),
    ({"errors": [{"method": "CreateEndpoint", "status": "UNAVAILABLE", "count": 2}]}, {}, 0, []),
])
def test_google_errors_are_one_message_with_the_documented_exit_code(tmp_path, capsys, vx, faults,
                                                                     target, code, words):
    project = make_project(tmp_path, vx, target)
    if faults:
        vx.faults(**faults)
    result = cli(capsys, project, tmp_path / "state", "deploy", "vx")
    assert result.code == code, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "google." not in result.err
    api = Vertex(vx)
    if code:        # nothing the failed deploy created is left behind
        assert api.everything() == ([], [])
    else:
        assert api.predict()["version"] == "v1"


def test_a_deploy_past_its_timeout_cancels_its_operation_and_cleans_up(tmp_path, capsys, vx):
    project = make_project(tmp_path, vx)
    write_model(project, "v1", "import time; time.sleep(120)")
    state = tmp_path / "state"
    built = run_cli(capsys, "build", "vx", "--image", "-f", str(project / "mlserve.yaml"))
    assert built.code == 0, built.err                # the timer covers no build then
    started = time.monotonic()
    result = cli(capsys, project, state, "deploy", "vx", "--timeout", "5")
    assert result.code == 1, result.err
    text = " ".join(result.err.split())
    assert "timeout" in text.lower() and "cancelling the deploy" in text, text
    assert "Traceback" not in result.err
    assert time.monotonic() - started < 30
    assert "DeployModel" in methods(vx) and "CancelOperation" in methods(vx)
    assert Vertex(vx).everything() == ([], [])


def kill_deploy_once(vx, project: Path, state: Path, method: str) -> None:
    """Start ``mlserve deploy`` and SIGKILL it as soon as it has called ``method``."""
    from tests.helpers import kill_at_point
    argv = [*MLSERVE, "deploy", "vx", "-f", str(project / "mlserve.yaml"), "--state", str(state)]
    saved, seen = dict(os.environ), len(vx.calls())
    os.environ.update(vx.env)
    try:
        kill_at_point(argv, lambda: method in methods(vx, seen), method, timeout=180)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_deploy_killed_during_deploy_model_is_reattached_by_the_next(tmp_path, capsys, vx):
    """The next deploy waits for the operation the killed one left running, finds the release
    it deployed serving but never smoke-checked, checks it, and deploys nothing again."""
    project = make_project(tmp_path, vx)
    state = tmp_path / "state"
    vx.faults(operation_seconds=8, operation_methods=["DeployModel"])   # the killed one's
    kill_deploy_once(vx, project, state, "DeployModel")
    vx.faults(operation_seconds=0)
    again = cli(capsys, project, state, "deploy", "vx")
    assert again.code == 0, again.err
    text = " ".join(again.err.split())
    assert "of an earlier command is still running" in text, text
    assert "deployed by an earlier command that never checked it" in text, text
    api = Vertex(vx)
    assert api.predict()["version"] == "v1"
    assert len(api.endpoint().deployed_models) == 1
    assert methods(vx).count("DeployModel") == 1 and methods(vx).count("UploadModel") == 1
    assert cli(capsys, project, state, "delete", "vx", "--yes").code == 0
    assert api.everything() == ([], [])


def test_a_failed_smoke_shifts_the_traffic_back_then_logs_follow(tmp_path, capsys, vx):
    project = make_project(tmp_path, vx, smoke=[{"input": {"x": [1, 2]},
                                                 "expect": {"y": [2, 4], "version": "v1"}}])
    state = tmp_path / "state"
    assert cli(capsys, project, state, "deploy", "vx").code == 0
    api = Vertex(vx)
    with Poller(lambda: api.predict()["version"], interval=0.05) as poll:
        write_model(project, "v2")
        refused = cli(capsys, project, state, "deploy", "vx")
        assert refused.code == 1, refused.err
        text = " ".join(refused.err.split())
        assert "smoke case 1" in text and "the previous release serves again" in text, text
    assert api.predict()["version"] == "v1"
    assert poll.failures == [], poll.failures[:3]
    assert len(api.endpoint().deployed_models) == 1
    assert methods(vx).count("UpdateEndpoint") == 2

    follow = subprocess.Popen([*MLSERVE, "logs", "vx", "--follow", "-f",
                               str(project / "mlserve.yaml"), "--state", str(state)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, **vx.env})
    try:
        time.sleep(3)                      # it has read what is there and follows
        from google.protobuf import json_format, struct_pb2
        api.prediction.predict(endpoint=f"{api.location}/endpoints/{ENDPOINT}", instances=[
            json_format.ParseDict({"x": [737373]}, struct_pb2.Value())])
        seen = read_until(follow, "737373", timeout=30)
        assert "737373" in seen, seen[-2000:]
    finally:
        follow.kill()
        follow.wait()
    assert cli(capsys, project, state, "delete", "vx", "--yes").code == 0


def test_secrets_reach_the_model_only_when_opted_in_and_never_the_journal(tmp_path, capsys, vx,
                                                                           monkeypatch):
    secret = "vx-secret-value-8c2e"
    monkeypatch.setenv("MLSV_VX_TOKEN", secret)
    project = make_project(tmp_path, vx, secrets=["MLSV_VX_TOKEN"])
    state = tmp_path / "state"
    refused = cli(capsys, project, state, "deploy", "vx")
    assert refused.code == 2 and "secrets: environment" in " ".join(refused.err.split())
    assert vx.calls() == []                              # refused before any Google call

    project = make_project(tmp_path, vx, {"secrets": "environment"}, secrets=["MLSV_VX_TOKEN"])
    deployed = cli(capsys, project, state, "deploy", "vx", "--json")
    assert deployed.code == 0, deployed.err
    api = Vertex(vx)
    model = api.models.get_model(name=api.endpoint().deployed_models[0].model)
    env = {e.name: e.value for e in model.container_spec.env}
    assert env["MLSV_VX_TOKEN"] == secret                # as documented
    assert_secret_hidden(capsys, project / "mlserve.yaml", state, secret,
                         [deployed.out, deployed.err], ("status", "vx", "--json"),
                         ("logs", "vx", "--lines", "500"), ("plan", "vx", "--json"))
    assert cli(capsys, project, state, "delete", "vx", "--yes").code == 0


def test_migrate_sagemaker_to_vertex(tmp_path, capsys, vx, sagemaker_env):
    """Migrate deploys the vertex target, compares its answers (through ``predict``) with the
    SageMaker endpoint's (InvokeEndpoint), and only then removes the SageMaker endpoint,
    configs and models (by tag)."""
    project = make_project(tmp_path, vx)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["sm"] = {
        "provider": "sagemaker", "role": sagemaker_env.role_arn,
        "repository": f"{vx.registry.address}/mlsv-sm-hello",
        "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}", "health_timeout": 240}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"
    sm = sagemaker_env.client("sagemaker")

    try:
        assert cli(capsys, project, state, "deploy", "sm").code == 0
        result = migrate_json(capsys, project / "mlserve.yaml", state, "sm", "vx")
        assert result["providers"] == {"from": "sagemaker", "to": "vertex"}
        assert result["compared"] >= 1 and result["mismatches"] == []
        assert Vertex(vx).predict()["version"] == "v1"
        assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    finally:
        delete_targets(project / "mlserve.yaml", state, "sm", "vx")


def test_deploy_image_built_for_a_docker_target(tmp_path, capsys, vx):
    """``deploy vx --image REF`` runs an image built earlier for a docker target, even after
    the code changed: its release is the one the image carries; it is copied into the target's
    repository (Vertex pulls from Artifact Registry) and the Model names that copy."""
    project = make_project(tmp_path, vx)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["box"] = {"provider": "docker", "image": "mlserve-test/vxh-img", "push": False,
                                  "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}"}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"
    built = run_cli(capsys, "build", "box", "--image", "--json", "-f",
                    str(project / "mlserve.yaml"))
    assert built.code == 0, built.err
    image = json.loads(built.out)["image"]
    write_model(project, "v2")
    moved = cli(capsys, project, state, "deploy", "vx", "--image", image["ref"], "--json")
    assert moved.code == 0, moved.err
    release = json.loads(moved.out)["release"]
    assert image["ref"].endswith(f":{release}")
    api = Vertex(vx)
    assert api.predict()["version"] == "v1"
    model = api.models.get_model(name=api.endpoint().deployed_models[0].model)
    assert model.container_spec.image_uri == f"{vx.registry.address}/mlsv-vx-hello:{release}"
    assert cli(capsys, project, state, "delete", "vx", "--yes").code == 0


def test_an_existing_endpoint_is_reused_and_kept_by_delete(tmp_path, capsys, vx):
    """``endpoint`` naming an endpoint mlserve did not create: the model is deployed on it, and
    ``delete`` undeploys and deletes what mlserve made but keeps the endpoint."""
    api = Vertex(vx)
    api.endpoints.create_endpoint(parent=api.location, endpoint_id="shared-ep",
                                  endpoint={"display_name": "theirs"}).result(timeout=60)
    project = make_project(tmp_path, vx, {"endpoint": "shared-ep"})
    state = tmp_path / "state"
    deployed = cli(capsys, project, state, "deploy", "vx")
    assert deployed.code == 0, deployed.err
    assert "creating endpoint" not in deployed.err
    assert api.predict("shared-ep")["version"] == "v1"
    assert cli(capsys, project, state, "delete", "vx", "--yes").code == 0
    endpoints, models = api.everything()
    assert [e.display_name for e in endpoints] == ["theirs"] and models == []
    assert list(api.endpoint("shared-ep").deployed_models) == []
