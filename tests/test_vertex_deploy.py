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

from tests.helpers import MLSERVE, Poller, run_cli
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG

MODEL = '''
VERSION = "{version}"


class Model:
    def load(self):
        {load}

    def predict(self, payload):
        print("predicting", payload, flush=True)
        return {{"y": [2 * v for v in payload["x"]], "version": VERSION}}
'''
MUST_NOT_LOAD = 'raise RuntimeError("weights missing: cannot load")'
ENDPOINT = "vxh-vx"


def write_model(project: Path, version: str, load: str = "pass") -> None:
    (project / "model.py").write_text(MODEL.format(version=version, load=load))


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


READS = ("Get", "List", "Token")


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
    assert all(m.startswith(READS) for m in methods(vx, seen)), methods(vx, seen)

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
