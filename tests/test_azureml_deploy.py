"""The ``azureml`` provider end to end: the real CLI, azure-ai-ml and azure-identity against the
Azure ML emulator (tests/emulators/azureml: HTTPS, ARM's async operations; it runs each
deployment's image on the private dockerd, probes its liveness and readiness routes, and proxies
the scoring URI with key auth). Images are built FROM the local base image and pushed to the
private registry standing in for Azure Container Registry. The credential is the default
chain's managed identity (IDENTITY_ENDPOINT, served by the emulator).

One deployment walks through what users do, scored in a thread with zero failed requests:
deploy (endpoint + blue), a no-op deploy (reads only), an update (green, smoke against green
alone, then traffic), rollback (traffic back to blue), a release that never gets ready (alive,
readiness never passes) and one whose container exits (traffic never moves for either), logs,
and delete with the journal removed. Then each Azure error shape, --timeout, a deploy killed
while its deployment is Creating, and migrate sagemaker -> azureml -> sagemaker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (MLSERVE, MUST_NOT_LOAD, Poller, assert_secret_hidden, delete_targets,
                           kill_at_point, migrate_json, read_until, run_cli, write_model)
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG
from tests.infra.azureml import RESOURCE_GROUP, WORKSPACE

ENDPOINT = "amh-az"


def make_project(root: Path, registry, target: dict | None = None, **top) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    if not (project / "model.py").exists():
        write_model(project, "v1")
    manifest = {"name": "amh", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {"az": {"provider": "azureml", "resource_group": RESOURCE_GROUP,
                                   "workspace": WORKSPACE, "registry": registry.address,
                                   "repository": "mlsv-az-hello",
                                   "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                   "health_timeout": 240, **(target or {})}}, **top}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def cli(capsys, project: Path, state: Path, *args: str):
    return run_cli(capsys, *args, "-f", str(project / "mlserve.yaml"), "--state", str(state))


def operations(az, since: int = 0) -> list[str]:
    return [c["operation"] for c in az.calls()[since:]]


def traffic(az) -> dict:
    """The endpoint's traffic split, deployments with a share only."""
    found = az.arm("GET", f"onlineEndpoints/{ENDPOINT}")["properties"]["traffic"]
    return {name: share for name, share in found.items() if share}


def deployments(az) -> dict:
    """name -> (release tag, provisioningState)."""
    found = az.arm("GET", f"onlineEndpoints/{ENDPOINT}/deployments")["value"]
    return {d["name"]: (d["tags"].get("mlserve:release"), d["properties"]["provisioningState"])
            for d in found}


@pytest.fixture(scope="module")
def az(azureml_env, base_image):
    return azureml_env


@pytest.fixture
def fresh(az):
    az.reset()
    yield az
    az.reset()


def test_deploy_noop_update_rollback_failing_release_logs_and_delete(tmp_path, capsys, fresh):
    az = fresh
    project = make_project(tmp_path, az.registry)
    state = tmp_path / "state"
    first = cli(capsys, project, state, "deploy", "az", "--json")
    assert first.code == 0, first.err
    v1 = json.loads(first.out)
    assert v1["url"].endswith(f"/score/{ENDPOINT}/score"), v1      # the scoring URI
    assert az.score(ENDPOINT, {"x": [1, 2]})["version"] == "v1"
    assert traffic(az) == {"blue": 100}
    endpoint = az.arm("GET", f"onlineEndpoints/{ENDPOINT}")
    assert endpoint["properties"]["authMode"] == "Key"
    assert endpoint["tags"]["mlserve:deployment"] == "amh.az"

    status = cli(capsys, project, state, "status", "az", "--json")
    assert status.code == 0 and json.loads(status.out)["status"] == "READY", status.out
    predicted = cli(capsys, project, state, "predict", "az", "--input", '{"x": [3]}')
    assert predicted.code == 0 and '"y": [6]' in predicted.out, predicted.out + predicted.err

    seen = len(az.calls())
    again = cli(capsys, project, state, "deploy", "az", "--json")
    assert again.code == 0 and json.loads(again.out)["changed"] is False, again.err
    assert all(op.startswith(("GET", "POST listKeys")) for op in operations(az, seen)), \
        operations(az, seen)

    with Poller(lambda: az.score(ENDPOINT, {"x": [1, 2]})["version"], interval=0.05) as poll:
        write_model(project, "v2")
        seen = len(az.calls())
        update = cli(capsys, project, state, "deploy", "az")
        assert update.code == 0, update.err
        assert az.score(ENDPOINT, {"x": [1, 2]})["version"] == "v2"
        assert traffic(az) == {"green": 100}
        calls = az.calls()[seen:]
        smoke = max(i for i, c in enumerate(calls) if c["name"] == f"{ENDPOINT}/green")
        shift = max(i for i, c in enumerate(calls) if c["operation"] == "PUT onlineEndpoints")
        assert smoke < shift, calls               # smoke against green before traffic moved

        back = cli(capsys, project, state, "rollback", "az")
        assert back.code == 0, back.err
        assert az.score(ENDPOINT, {"x": [1, 2]})["version"] == "v1"
        assert traffic(az) == {"blue": 100}
        assert deployments(az)["blue"][0] == v1["release"]

        # alive (the runtime answers its liveness route while loading) but never ready
        write_model(project, "v3", "import time; time.sleep(600)")
        az.faults(startup_seconds=4)
        stuck = cli(capsys, project, state, "deploy", "az")
        assert stuck.code == 1, stuck.err
        text = " ".join(stuck.err.split())
        assert "traffic never moved" in text and "Readiness probe failed" in text, text
        assert traffic(az) == {"blue": 100}

        write_model(project, "v4", MUST_NOT_LOAD)          # the container exits
        broken = cli(capsys, project, state, "deploy", "az")
        assert broken.code == 1, broken.err
        text = " ".join(broken.err.split())
        assert "traffic never moved" in text and "User container has crashed" in text, text
        assert "Traceback" not in broken.err
        assert traffic(az) == {"blue": 100}
        assert az.score(ENDPOINT, {"x": [1, 2]})["version"] == "v1"
    assert poll.failures == [] and set(poll.answers) >= {"v1", "v2"}, poll.failures[:3]
    assert not {"v3", "v4"} & set(poll.answers)

    logs = cli(capsys, project, state, "logs", "az", "--lines", "500")
    assert logs.code == 0 and "predicting" in logs.out, logs.out[-2000:] + logs.err

    shutil.rmtree(state)                                   # the journal is gone
    gone = cli(capsys, project, state, "delete", "az", "--yes")
    assert gone.code == 0, gone.err
    assert az.arm("GET", "onlineEndpoints")["value"] == []


@pytest.mark.parametrize("faults, target, code, words", [
    ({"errors": [{"operation": "PUT onlineEndpoints", "code": "AuthorizationFailed",
                  "count": None}]}, {}, 3,
     ["AuthorizationFailed", "does not have authorization", "role"]),
    ({"quotas": {"Standard_DS3_v2": 0}}, {}, 1, ["quota", "Standard_DS3_v2", "Quotas"]),
    ({}, {"instance_type": "Standard_Nope_v9"}, 2, ["Standard_Nope_v9", "not supported"]),
    ({"errors": [{"operation": "PUT deployments", "code": "TooManyRequests", "count": None}]},
     {}, 1, ["TooManyRequests", "4 attempts"]),
    ({"errors": [{"operation": "GET workspaces", "code": "ResourceNotFound", "count": None}]},
     {}, 1, ["ResourceNotFound", "resource_group"]),
])
def test_azure_errors_are_one_message_with_the_documented_exit_code(tmp_path, capsys, fresh,
                                                                     faults, target, code, words):
    az = fresh
    project = make_project(tmp_path, az.registry, target)
    if faults:
        az.faults(**faults)
    result = cli(capsys, project, tmp_path / "state", "deploy", "az")
    assert result.code == code, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "azure.core" not in result.err
    az.faults(errors=[])
    assert az.arm("GET", "onlineEndpoints")["value"] == []      # nothing left behind


def test_transient_throttling_is_retried(tmp_path, capsys, fresh):
    az = fresh
    project = make_project(tmp_path, az.registry)
    az.faults(errors=[{"operation": "PUT deployments", "code": "TooManyRequests", "count": 2}])
    result = cli(capsys, project, tmp_path / "state", "deploy", "az")
    assert result.code == 0, result.err
    assert az.score(ENDPOINT, {"x": [1]})["version"] == "v1"
    assert [c["code"] for c in az.calls() if c["operation"] == "PUT deployments"] == \
        ["TooManyRequests", "TooManyRequests", None]


def test_secrets_are_refused_unless_opted_in_and_never_in_the_journal(tmp_path, capsys, fresh,
                                                                      monkeypatch):
    az = fresh
    secret = "az-secret-value-7c2e"
    monkeypatch.setenv("MLSV_AZ_TOKEN", secret)
    project = make_project(tmp_path, az.registry, secrets=["MLSV_AZ_TOKEN"])
    state = tmp_path / "state"
    refused = cli(capsys, project, state, "deploy", "az")
    assert refused.code == 2 and "secrets: environment" in " ".join(refused.err.split())
    assert az.calls() == []                              # refused before any Azure call
    project = make_project(tmp_path, az.registry, {"secrets": "environment"},
                           secrets=["MLSV_AZ_TOKEN"])
    deployed = cli(capsys, project, state, "deploy", "az", "--json")
    assert deployed.code == 0, deployed.err
    blue = az.arm("GET", f"onlineEndpoints/{ENDPOINT}/deployments/blue")
    assert blue["properties"]["environmentVariables"]["MLSV_AZ_TOKEN"] == secret  # as documented
    assert_secret_hidden(capsys, project / "mlserve.yaml", state, secret,
                         [deployed.out, deployed.err], ("status", "az", "--json"),
                         ("plan", "az", "--json"))
    assert cli(capsys, project, state, "delete", "az", "--yes").code == 0


def test_timeout_stops_a_first_deploy_and_leaves_nothing(tmp_path, capsys, fresh):
    az = fresh
    project = make_project(tmp_path, az.registry)
    built = run_cli(capsys, "build", "az", "-f", str(project / "mlserve.yaml"), "--image",
                    "--push")
    assert built.code == 0, built.err            # the timeout is spent waiting for Azure
    az.faults(transition_seconds=60)          # the deployment would be Creating for a minute
    began = time.monotonic()
    result = cli(capsys, project, tmp_path / "state", "deploy", "az", "--timeout", "8")
    assert result.code == 1, result.err
    assert "timed out after 8 s" in result.err and "Traceback" not in result.err
    assert time.monotonic() - began < 40
    assert "PUT deployments" in operations(az)
    assert az.arm("GET", "onlineEndpoints")["value"] == []     # the endpoint it made is deleted


def test_a_deploy_killed_while_its_deployment_is_creating_is_reattached_then_logs_follow(
        tmp_path, capsys, fresh):
    az = fresh
    project = make_project(tmp_path, az.registry)
    state = tmp_path / "state"
    az.faults(transition_seconds=5)     # still Creating when the next command (in process) looks
    argv = [*MLSERVE, "deploy", "az", "-f", str(project / "mlserve.yaml"), "--state", str(state)]
    kill_at_point(argv, lambda: time.sleep(0.05) or "PUT deployments" in operations(az),
                  "PUT deployments", timeout=180)
    assert deployments(az)["blue"][1] == "Creating"
    again = cli(capsys, project, state, "deploy", "az")
    assert again.code == 0, again.err
    assert "an earlier command" in again.err
    assert operations(az).count("PUT deployments") == 1
    assert traffic(az) == {"blue": 100}
    assert az.score(ENDPOINT, {"x": [1]})["version"] == "v1"
    follow = subprocess.Popen([*MLSERVE, "logs", "az", "--follow", "-f",
                               str(project / "mlserve.yaml"), "--state", str(state)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(3)                      # it has read what is there and follows
        az.score(ENDPOINT, {"x": [737373]})
        seen = read_until(follow, "737373", timeout=30)
        assert "737373" in seen, seen[-2000:]
    finally:
        follow.kill()
        follow.wait()
    assert cli(capsys, project, state, "delete", "az", "--yes").code == 0


def test_migrate_sagemaker_to_azureml_and_back(tmp_path, capsys, fresh, sagemaker_env):
    """Migrate deploys the destination, compares its answers with the source's, and only then
    removes the source: sagemaker -> azureml (answers through the scoring URI), azureml ->
    sagemaker (the endpoint and its deployments deleted)."""
    az, sm = fresh, sagemaker_env
    project = make_project(tmp_path, az.registry)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["sm"] = {
        "provider": "sagemaker", "role": sm.role_arn,
        "repository": f"{sm.registry.address}/mlsv-az-sm",
        "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}", "health_timeout": 240}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"

    try:
        assert cli(capsys, project, state, "deploy", "sm").code == 0
        moved = migrate_json(capsys, project / "mlserve.yaml", state, "sm", "az")
        assert moved["providers"] == {"from": "sagemaker", "to": "azureml"}
        assert moved["compared"] >= 1 and moved["mismatches"] == []
        assert az.score(ENDPOINT, {"x": [1]})["version"] == "v1"
        assert sm.client("sagemaker").list_endpoints()["Endpoints"] == []

        moved = migrate_json(capsys, project / "mlserve.yaml", state, "az", "sm")
        assert moved["providers"] == {"from": "azureml", "to": "sagemaker"}
        assert moved["compared"] >= 1 and moved["mismatches"] == []
        assert az.arm("GET", "onlineEndpoints")["value"] == []
        predicted = cli(capsys, project, state, "predict", "sm", "--input", '{"x": [4]}')
        assert predicted.code == 0 and '"y": [8]' in predicted.out, predicted.err
    finally:
        delete_targets(project / "mlserve.yaml", state, "sm", "az")


def test_migrate_vertex_to_azureml(tmp_path, capsys, fresh, vertex_env):
    """Vertex AI -> Azure ML, both emulators running the image: migrate deploys the azureml
    target, compares its answers (scoring URI) with the Vertex endpoint's (``predict``), and only
    then undeploys and deletes the Vertex endpoint and Models mlserve made (by label)."""
    from tests.test_vertex_deploy import Vertex
    az, vx = fresh, vertex_env
    project = make_project(tmp_path, az.registry)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["vx"] = {
        "provider": "vertex", **vx.target, "repository": f"{vx.registry.address}/mlsv-vx-az",
        "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}", "health_timeout": 240}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"
    try:
        assert cli(capsys, project, state, "deploy", "vx").code == 0
        assert Vertex(vx).predict("amh-vx")["version"] == "v1"
        result = migrate_json(capsys, project / "mlserve.yaml", state, "vx", "az")
        assert result["providers"] == {"from": "vertex", "to": "azureml"}
        assert result["compared"] >= 1 and result["mismatches"] == []
        assert az.score(ENDPOINT, {"x": [1]})["version"] == "v1"
        assert Vertex(vx).everything() == ([], [])
    finally:
        delete_targets(project / "mlserve.yaml", state, "vx", "az")


def test_deploy_an_image_built_for_a_docker_target(tmp_path, capsys, fresh):
    """``deploy az --image REF`` runs an image built earlier (for a docker target) even after the
    code changed: its release is the one the image carries; it is copied into the target's
    registry (Azure pulls from there) and served on Azure's port 8080."""
    from tests.infra.net import free_port
    az = fresh
    project = make_project(tmp_path, az.registry)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["box"] = {"provider": "docker", "image": "mlserve-test/amh-img",
                                  "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                  "port": free_port()}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    built = run_cli(capsys, "build", "box", "-f", str(project / "mlserve.yaml"), "--image",
                    "--no-push", "--json")
    assert built.code == 0, built.err
    image = json.loads(built.out)["image"]["ref"]
    write_model(project, "v2")
    state = tmp_path / "state"
    moved = cli(capsys, project, state, "deploy", "az", "--image", image, "--json")
    assert moved.code == 0, moved.err
    assert json.loads(moved.out)["release"] == image.rsplit(":", 1)[1]
    assert az.score(ENDPOINT, {"x": [1]})["version"] == "v1"
    blue = az.arm("GET", f"onlineEndpoints/{ENDPOINT}/deployments/blue")
    environment = az.arm("GET", blue["properties"]["environmentId"].split(
        "/workspaces/" + WORKSPACE + "/", 1)[1])
    assert environment["properties"]["image"] == \
        f"{az.registry.address}/mlsv-az-hello:{image.rsplit(':', 1)[1]}"
    assert cli(capsys, project, state, "delete", "az", "--yes").code == 0
