"""The ``sagemaker`` provider end to end: the real CLI and real boto3 against the SageMaker
emulator (tests/emulators/sagemaker: it runs each endpoint's image with ``docker run IMAGE
serve`` on the private dockerd and proxies InvokeEndpoint to its /invocations) and moto
(Application Auto Scaling, CloudWatch Logs). Images are built FROM the local base image and
pushed to the private registry standing in for ECR.

One deployment walks through what users do, polled through InvokeEndpoint in a thread with zero
failed invocations: deploy (autoscaling registered), a no-op deploy (read calls only), an update
(blue/green), a release whose model fails to load (SageMaker rolls the update back, the old
variant serves, exit 1 with the FailureReason), rollback, logs, and delete with the journal
removed (found by tags). Then serverless, each AWS error shape (faults set on the emulator), and
a deploy killed while the endpoint is Creating.
"""

from __future__ import annotations

import json
import shutil
import signal
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (MLSERVE, MUST_NOT_LOAD, Poller, assert_secret_hidden, delete_targets,
                           migrate_json, read_until, run_cli, write_model)
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG

def make_project(root: Path, registry, target: dict | None = None, **top) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    if not (project / "model.py").exists():
        write_model(project, "v1")
    manifest = {"name": "smh", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {"sm": {"provider": "sagemaker",
                                   "role": "arn:aws:iam::123456789012:role/mlsv-sagemaker-execution",
                                   "repository": f"{registry.address}/mlsv-sm-hello",
                                   "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                   "health_timeout": 240, **(target or {})}}, **top}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def cli(capsys, project: Path, state: Path, *args: str):
    return run_cli(capsys, *args, "-f", str(project / "mlserve.yaml"), "--state", str(state))


def invoke(env, name: str = "smh-sm") -> dict:
    reply = env.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, Body=json.dumps({"input": {"x": [1, 2]}}),
        ContentType="application/json")
    return json.loads(reply["Body"].read())["output"]


def operations(env, since: int = 0) -> list[str]:
    return [c["operation"] for c in env.calls()[since:]]


READS = ("Describe", "List")


def scaling_targets(env) -> list[tuple]:
    found = env.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"]
    return [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in found]


@pytest.fixture
def sm(sagemaker_env, base_image):
    return sagemaker_env


def test_deploy_noop_update_failed_update_rollback_logs_and_delete(tmp_path, capsys, sm):
    project = make_project(tmp_path, sm.registry,
                           scaling={"min_replicas": 1, "max_replicas": 3, "concurrency": 4})
    state = tmp_path / "state"
    first = cli(capsys, project, state, "deploy", "sm", "--json")
    assert first.code == 0, first.err
    assert invoke(sm)["version"] == "v1"
    described = sm.client("sagemaker").describe_endpoint(EndpointName="smh-sm")
    assert described["EndpointStatus"] == "InService"
    assert scaling_targets(sm) == [("endpoint/smh-sm/variant/AllTraffic", 1, 3)]
    policies = sm.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 240.0

    status = cli(capsys, project, state, "status", "sm", "--json")
    assert status.code == 0 and json.loads(status.out)["status"] == "READY", status.out
    predicted = cli(capsys, project, state, "predict", "sm", "--input", '{"x": [3]}')
    assert predicted.code == 0 and '"y": [6]' in predicted.out, predicted.out + predicted.err

    seen = len(sm.calls())
    again = cli(capsys, project, state, "deploy", "sm", "--json")
    assert again.code == 0 and json.loads(again.out)["changed"] is False, again.err
    assert all(op.startswith(READS) for op in operations(sm, seen)), operations(sm, seen)

    with Poller(lambda: invoke(sm)["version"], interval=0.05) as poll:
        write_model(project, "v2")
        update = cli(capsys, project, state, "deploy", "sm")
        assert update.code == 0, update.err
        assert invoke(sm)["version"] == "v2"

        write_model(project, "v3", MUST_NOT_LOAD)
        broken = cli(capsys, project, state, "deploy", "sm")
        assert broken.code == 1, broken.err
        text = " ".join(broken.err.split())
        assert "rolled the update back" in text and "ping" in text.lower(), text
        assert "Traceback" not in broken.err
        assert invoke(sm)["version"] == "v2"
        assert scaling_targets(sm) == [("endpoint/smh-sm/variant/AllTraffic", 1, 3)]

        back = cli(capsys, project, state, "rollback", "sm")
        assert back.code == 0, back.err
        assert invoke(sm)["version"] == "v1"
    assert poll.failures == [] and set(poll.answers) >= {"v1", "v2"}, poll.failures[:3]
    assert "v3" not in poll.answers

    logs = cli(capsys, project, state, "logs", "sm", "--lines", "500")
    assert logs.code == 0 and "predicting" in logs.out, logs.out[-2000:] + logs.err

    shutil.rmtree(state)                                   # the journal is gone
    gone = run_cli(capsys, "delete", "sm", "-f", str(project / "mlserve.yaml"), "--state",
                   str(state), "--yes")
    assert gone.code == 0, gone.err
    client = sm.client("sagemaker")
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []
    assert client.list_models()["Models"] == []
    assert sm.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_serverless_endpoint_and_delete(tmp_path, capsys, sm):
    project = make_project(tmp_path, sm.registry,
                           {"serverless": {"memory_mb": 2048, "max_concurrency": 3}},
                           scaling={"min_replicas": 0, "max_replicas": 4})
    state = tmp_path / "state"
    result = cli(capsys, project, state, "deploy", "sm")
    assert result.code == 0, result.err
    client = sm.client("sagemaker")
    config = client.describe_endpoint(EndpointName="smh-sm")["EndpointConfigName"]
    (variant,) = client.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant
    assert sm.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert invoke(sm)["version"] == "v1"
    follow = subprocess.Popen([*MLSERVE, "logs", "sm", "--follow", "-f",
                               str(project / "mlserve.yaml"), "--state", str(state)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, **sm.env})
    try:
        time.sleep(3)                      # it has read what is there and follows
        sm.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="smh-sm", Body=json.dumps({"input": {"x": [424242]}}),
            ContentType="application/json")
        seen = read_until(follow, "424242", timeout=60)
        assert "424242" in seen, seen[-2000:]
    finally:
        follow.kill()
        follow.wait()
    assert cli(capsys, project, state, "delete", "sm", "--yes").code == 0
    assert client.list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize("faults, target, code, words", [
    ({"errors": [{"operation": "CreateModel", "code": "AccessDeniedException", "count": None}]},
     {}, 3, ["AccessDeniedException", "CreateModel", "IAM"]),
    ({"quotas": {"ml.m5.large": 0}}, {}, 1,
     ["ml.m5.large for endpoint usage", "Service Quotas"]),
    ({}, {"instance_type": "ml.nope.large"}, 2, ["ValidationException", "instanceType"]),
    ({"errors": [{"operation": "CreateEndpoint", "code": "ThrottlingException", "count": None}]},
     {}, 1, ["ThrottlingException", "5 attempts"]),
    ({"errors": [{"operation": "CreateEndpointConfig", "code": "InternalFailure",
                  "count": None}]}, {}, 1, ["InternalFailure", "5 attempts"]),
    ({"errors": [{"operation": "CreateEndpoint", "code": "ThrottlingException", "count": 2}]},
     {}, 0, []),
])
def test_aws_errors_are_one_message_with_the_documented_exit_code(tmp_path, capsys, sm, faults,
                                                                   target, code, words):
    project = make_project(tmp_path, sm.registry, target)
    if faults:
        sm.faults(**faults)
    result = cli(capsys, project, tmp_path / "state", "deploy", "sm")
    assert result.code == code, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "botocore" not in result.err
    client = sm.client("sagemaker")
    if code:        # nothing the failed deploy created is left behind
        assert client.list_endpoints()["Endpoints"] == []
        assert client.list_endpoint_configs()["EndpointConfigs"] == []
        assert client.list_models()["Models"] == []
    else:
        assert invoke(sm)["version"] == "v1"


def kill_deploy_once_creating(sm, project: Path, state: Path) -> None:
    """Start ``mlserve deploy`` and SIGKILL it as soon as it has called CreateEndpoint."""
    argv = [*MLSERVE, "deploy", "sm", "-f", str(project / "mlserve.yaml"), "--state", str(state)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **sm.env})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if "CreateEndpoint" in operations(sm):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the deploy ended before the endpoint was created"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def test_a_deploy_killed_while_creating_is_reattached_by_the_next(tmp_path, capsys, sm):
    project = make_project(tmp_path, sm.registry)
    state = tmp_path / "state"
    sm.faults(transition_seconds=30)      # still Creating when the next command looks, even
    kill_deploy_once_creating(sm, project, state)      # on a loaded machine
    assert sm.client("sagemaker").describe_endpoint(EndpointName="smh-sm")[
        "EndpointStatus"] == "Creating"
    again = cli(capsys, project, state, "deploy", "sm")
    assert again.code == 0, again.err
    assert "an earlier command" in again.err
    assert invoke(sm)["version"] == "v1"
    assert operations(sm).count("CreateEndpoint") == 1
    assert cli(capsys, project, state, "delete", "sm", "--yes").code == 0


def test_migrate_local_to_sagemaker_to_docker(tmp_path, capsys, sm):
    """Migrate deploys the destination, compares its answers with the source's, and only then
    removes the source: local -> sagemaker (answers through InvokeEndpoint), sagemaker ->
    docker (the endpoint, configs and models removed by tag)."""
    from tests.infra.net import free_port
    local_port, docker_port = free_port(), free_port()
    project = make_project(tmp_path, sm.registry)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["here"] = {"provider": "local", "port": local_port, "health_timeout": 60}
    manifest["targets"]["box"] = {"provider": "docker", "image": "mlserve-test/smh-box",
                                  "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                  "port": docker_port, "health_timeout": 60}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"

    try:
        assert cli(capsys, project, state, "deploy", "here").code == 0
        moved = migrate_json(capsys, project / "mlserve.yaml", state, "here", "sm")
        assert moved["providers"] == {"from": "local", "to": "sagemaker"}
        assert moved["compared"] >= 1 and moved["mismatches"] == []
        assert invoke(sm)["version"] == "v1"

        moved = migrate_json(capsys, project / "mlserve.yaml", state, "sm", "box")
        assert moved["providers"] == {"from": "sagemaker", "to": "docker"}
        assert moved["compared"] >= 1 and moved["mismatches"] == []
        client = sm.client("sagemaker")
        assert client.list_endpoints()["Endpoints"] == []
        assert client.list_models()["Models"] == []
        predicted = cli(capsys, project, state, "predict", "box", "--input", '{"x": [4]}')
        assert predicted.code == 0 and '"y": [8]' in predicted.out, predicted.err
    finally:
        delete_targets(project / "mlserve.yaml", state, "here", "sm", "box")


def test_deploy_image_built_for_a_docker_target(tmp_path, capsys, sm):
    """``deploy sm --image REF`` runs an image built earlier (here for a docker target) even after
    the code changed: its release is the one the image carries, and the image is copied into the
    target's repository (SageMaker pulls only from ECR), then pulled by the endpoint."""
    from tests.infra.net import free_port
    project = make_project(tmp_path, sm.registry)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["box"] = {"provider": "docker", "image": "mlserve-test/smh-img",
                                  "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                  "port": free_port(), "health_timeout": 60}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state"
    try:
        built = cli(capsys, project, state, "deploy", "box", "--json")
        assert built.code == 0, built.err
        v1 = json.loads(built.out)
        write_model(project, "v2")
        moved = cli(capsys, project, state, "deploy", "sm", "--image", v1["extra"]["image"],
                    "--json")
        assert moved.code == 0, moved.err
        assert json.loads(moved.out)["release"] == v1["release"]
        assert invoke(sm)["version"] == "v1"
        model = sm.client("sagemaker").list_models()["Models"][0]["ModelName"]
        image = sm.client("sagemaker").describe_model(ModelName=model)["PrimaryContainer"]["Image"]
        assert image == f"{sm.registry.address}/mlsv-sm-hello:{v1['release']}"
        missing = cli(capsys, project, state, "deploy", "sm", "--image", "mlserve-test/nope:r-0")
        assert missing.code != 0 and "Traceback" not in missing.err
        assert "mlserve-test/nope:r-0" in missing.err
        assert invoke(sm)["version"] == "v1"
    finally:
        for target in ("sm", "box"):
            cli(capsys, project, state, "delete", target, "--yes", "--purge")


def test_a_failed_smoke_puts_the_old_config_back_then_a_canary_update(tmp_path, capsys, sm):
    """The smoke cases run through InvokeEndpoint once the update is InService: a failing case
    updates the endpoint back (the old release serves, exit 1). A canary update shifts 10% of
    the traffic first, then the rest; invocations never fail."""
    project = make_project(tmp_path, sm.registry, {"deployment": "canary", "canary_wait": 2},
                           smoke=[{"input": {"x": [1, 2]},
                                   "expect": {"y": [2, 4], "version": "v1"}}])
    state = tmp_path / "state"
    assert cli(capsys, project, state, "deploy", "sm").code == 0
    with Poller(lambda: invoke(sm)["version"], interval=0.05) as poll:
        write_model(project, "v2")
        refused = cli(capsys, project, state, "deploy", "sm")
        assert refused.code == 1, refused.err
        text = " ".join(refused.err.split())
        assert "smoke case 1" in text and "the previous release serves again" in text, text
        assert invoke(sm)["version"] == "v1"
        assert operations(sm).count("UpdateEndpoint") == 2

        data = yaml.safe_load((project / "mlserve.yaml").read_text())
        data["smoke"][0]["expect"]["version"] = "v2"
        (project / "mlserve.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        canary = cli(capsys, project, state, "deploy", "sm")
        assert canary.code == 0, canary.err
        assert invoke(sm)["version"] == "v2"
    assert poll.failures == [] and {"v1", "v2"} <= set(poll.answers), poll.failures[:3]
    last = sm.client("sagemaker").describe_endpoint(EndpointName="smh-sm")
    routing = last["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["CanarySize"]["Value"] == 10
    assert cli(capsys, project, state, "delete", "sm", "--yes").code == 0


def test_secrets_reach_the_model_only_when_opted_in_and_never_the_journal(tmp_path, capsys, sm,
                                                                           monkeypatch):
    secret = "sm-secret-value-5f1d"
    monkeypatch.setenv("MLSV_SM_TOKEN", secret)
    project = make_project(tmp_path, sm.registry, secrets=["MLSV_SM_TOKEN"])
    state = tmp_path / "state"
    refused = cli(capsys, project, state, "deploy", "sm")
    assert refused.code == 2 and "secrets: environment" in " ".join(refused.err.split())
    assert sm.calls() == []                              # refused before any AWS call

    project = make_project(tmp_path, sm.registry, {"secrets": "environment"},
                           secrets=["MLSV_SM_TOKEN"])
    deployed = cli(capsys, project, state, "deploy", "sm", "--json")
    assert deployed.code == 0, deployed.err
    client = sm.client("sagemaker")
    config = client.describe_endpoint(EndpointName="smh-sm")["EndpointConfigName"]
    model = client.describe_model(ModelName=config)
    assert model["PrimaryContainer"]["Environment"]["MLSV_SM_TOKEN"] == secret   # as documented
    assert invoke(sm)["version"] == "v1"
    assert_secret_hidden(capsys, project / "mlserve.yaml", state, secret,
                         [deployed.out, deployed.err], ("status", "sm", "--json"),
                         ("logs", "sm", "--lines", "500"), ("plan", "sm", "--json"))
    assert cli(capsys, project, state, "delete", "sm", "--yes").code == 0


def test_an_endpoint_a_killed_deploy_left_failed_is_replaced_by_the_next(tmp_path, capsys, sm):
    project = make_project(tmp_path, sm.registry)
    state = tmp_path / "state"
    sm.faults(transition_seconds=3, ping_fail=["mlsv-sm-hello"])
    kill_deploy_once_creating(sm, project, state)
    client = sm.client("sagemaker")
    deadline = time.monotonic() + 120
    while client.describe_endpoint(EndpointName="smh-sm")["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.describe_endpoint(EndpointName="smh-sm")["EndpointStatus"] == "Failed"
    status = cli(capsys, project, state, "status", "sm", "--json")
    assert json.loads(status.out)["status"] == "FAILED", status.out
    sm.faults(transition_seconds=0, ping_fail=[])
    again = cli(capsys, project, state, "deploy", "sm")
    assert again.code == 0, again.err
    assert "left Failed by an earlier command" in " ".join(again.err.split())
    assert invoke(sm)["version"] == "v1"
    assert cli(capsys, project, state, "delete", "sm", "--yes").code == 0
