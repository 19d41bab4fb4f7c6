"""The SageMaker emulator (tests/emulators/sagemaker), driven through real boto3: it keeps
state, goes through SageMaker's endpoint states, answers with SageMaker's error shapes, and runs
the endpoint's image on the real Docker engine as SageMaker does (``serve``, port 8080, ``/ping``
before InService, InvokeEndpoint -> ``/invocations``, container output in CloudWatch Logs in
moto). Images are examples/hello built by mlserve's own image builder and pushed to the local
registry standing in for ECR; one build per module."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tests.helpers import EXAMPLES, Poller, run_process
from tests.infra.sagemaker import ACCOUNT, REGION

ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def _build(tmp: Path, dockerd, registry, base_image, name: str) -> str:
    """examples/hello built by mlserve's image builder and pushed to ``registry`` as
    mlsv-sm/NAME; the pushed reference."""
    root = tmp / name
    shutil.copytree(EXAMPLES / "hello", root)
    manifest = root / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace(
        "targets:\n", "targets:\n  img: {provider: docker, image: "
        f"{json.dumps(f'{registry.address}/mlsv-sm/{name}')}, "
        f"base_image: {json.dumps(base_image.ref)}}}\n"))
    done = run_process("build", "img", "-f", str(root), "--image", "--push", "--json",
                       env={**dockerd.env(), "DOCKER_CONFIG": str(tmp / "docker-config")},
                       timeout=300)
    assert done.code == 0, done.err
    return json.loads(done.out)["image"]["ref"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, dockerd, registry, base_image) -> dict[str, str]:
    """examples/hello built and pushed once: ``hello`` by its registry reference, ``ecr`` by an
    ECR URL (the emulator pulls those from the registry standing in for ECR)."""
    hello = _build(tmp_path_factory.mktemp("sm-images"), dockerd, registry, base_image, "hello")
    return {"hello": hello, "ecr": hello.replace(registry.address, ECR, 1)}


#: hello's load() reads int(FACTOR): this environment makes it raise, so the runtime exits and
#: the instance never passes /ping (a real image whose model cannot load).
BROKEN = {"FACTOR": "weights-missing"}


# -- helpers ---------------------------------------------------------------------------------

def _error(caught) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError or pytest's ExceptionInfo of one."""
    response = getattr(caught, "value", caught).response
    return (response["Error"]["Code"], response["Error"]["Message"],
            response["ResponseMetadata"]["HTTPStatusCode"])


def _wait(sm, name: str, until: set[str], timeout: float = 120) -> tuple[dict, list[str]]:
    """Poll DescribeEndpoint until its status is in ``until``; the last answer and every
    status seen (in order, without repeats)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        found = sm.describe_endpoint(EndpointName=name)
        if not seen or seen[-1] != found["EndpointStatus"]:
            seen.append(found["EndpointStatus"])
        if found["EndpointStatus"] in until:
            return found, seen
        assert time.monotonic() < deadline, f"{name} stuck at {seen}"
        time.sleep(0.05)


def _wait_after_update(sm, name: str) -> tuple[dict, list[str]]:
    """Like ``_wait`` for InService, but InService counts only once Updating was seen."""
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        found = sm.describe_endpoint(EndpointName=name)
        if not seen or seen[-1] != found["EndpointStatus"]:
            seen.append(found["EndpointStatus"])
        if found["EndpointStatus"] in ("InService", "Failed") and len(seen) > 1:
            return found, seen
        assert time.monotonic() < deadline, f"{name} stuck at {seen}"
        time.sleep(0.05)


def _gone(sm, name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            sm.describe_endpoint(EndpointName=name)
        except sm.exceptions.ClientError as exc:
            assert exc.response["Error"]["Message"] == (
                f'Could not find endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name.lower()}".')
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _model(sm, env, name: str, image: str, **environment: str) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=env.role_arn,
                    PrimaryContainer={"Image": image, "Environment": environment},
                    Tags=[{"Key": "mlserve:deployment", "Value": "hello"}])


def _config(sm, name: str, model: str, **variant) -> None:
    variant = variant or {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model, **variant}])


def _endpoint(sm, env, name: str, image: str, **environment: str) -> dict:
    _model(sm, env, f"{name}-m1", image, **environment)
    _config(sm, f"{name}-c1", f"{name}-m1")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c1")
    found, _ = _wait(sm, name, {"InService", "Failed"})
    assert found["EndpointStatus"] == "InService", found
    return found


def _invoke(runtime, name: str, x: list[int]) -> dict:
    reply = runtime.invoke_endpoint(EndpointName=name, ContentType="application/json",
                                    Body=json.dumps({"input": {"x": x}}))
    return {"body": json.loads(reply["Body"].read()), "variant": reply["InvokedProductionVariant"]}


def _poller(runtime, name: str) -> Poller:
    """Invokes ``name`` continuously; each answer is the model's y for x = [1, 2]."""
    return Poller(lambda: _invoke(runtime, name, [1, 2])["body"]["output"]["y"])


def _containers(env, name: str) -> list:
    label = env.emulator.label
    return env.dockerd.client().containers.list(
        all=True, filters={"label": f"{label}.endpoint={name}"})


# -- endpoints over boto3 --------------------------------------------------------------------

def test_boto3_reaches_the_emulator_through_the_documented_variables(sagemaker_env):
    """botocore's per-service variables: service id "SageMaker" and "SageMaker Runtime"."""
    assert sagemaker_env.client("sagemaker").meta.endpoint_url == sagemaker_env.emulator.url
    assert sagemaker_env.client("sagemaker-runtime").meta.endpoint_url == sagemaker_env.emulator.url
    assert sagemaker_env.client("logs").meta.endpoint_url == sagemaker_env.moto.url
    assert sagemaker_env.client("application-autoscaling").meta.endpoint_url == sagemaker_env.moto.url
    listed = sagemaker_env.client("sagemaker").list_endpoints()
    assert listed["Endpoints"] == []
    assert sagemaker_env.calls() == [{"operation": "ListEndpoints", "name": None, "code": None}]


def test_create_runs_the_image_and_invoke_reaches_invocations(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    _model(sm, sagemaker_env, "hello-m1", images["ecr"], FACTOR="5")
    _config(sm, "hello-c1", "hello-m1")
    arn = sm.create_endpoint(EndpointName="Hello", EndpointConfigName="hello-c1")["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/hello"
    found, seen = _wait(sm, "Hello", {"InService", "Failed"})
    assert seen[0] == "Creating" and seen[-1] == "InService", (seen, found)
    assert found["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == images["ecr"]
    assert found["ProductionVariants"][0]["CurrentInstanceCount"] == 1

    answer = _invoke(runtime, "Hello", [1, 2, 3])
    assert answer == {"body": {"output": {"y": [5, 10, 15]}}, "variant": "AllTraffic"}
    (container,) = _containers(sagemaker_env, "Hello")
    assert container.attrs["Config"]["Cmd"] == ["serve"]
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"

    logs = sagemaker_env.client("logs")
    deadline = time.monotonic() + 20
    while True:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/Hello")
        names = [s["logStreamName"] for s in streams["logStreams"]]
        events = [e["message"] for e in logs.filter_log_events(
            logGroupName="/aws/sagemaker/Endpoints/Hello")["events"]]
        if any("POST /invocations" in m for m in events) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(names) == 1 and names[0].startswith("AllTraffic/i-"), names
    assert any("POST /invocations" in m for m in events), events


def test_update_is_blue_green_with_no_failed_invocation(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    _endpoint(sm, sagemaker_env, "bg", images["hello"], FACTOR="2")
    (old,) = _containers(sagemaker_env, "bg")
    _model(sm, sagemaker_env, "bg-m2", images["hello"], FACTOR="3")
    _config(sm, "bg-c2", "bg-m2")
    with _poller(runtime, "bg") as poller:
        time.sleep(0.2)
        sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-c2", DeploymentConfig={
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
                "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, "TerminationWaitInSeconds": 0}})
        found, seen = _wait_after_update(sm, "bg")
        time.sleep(0.3)
    assert seen[0] == "Updating" and seen[-1] == "InService", seen
    assert found["EndpointConfigName"] == "bg-c2" and "FailureReason" not in found
    assert poller.failures == [] and len(poller.answers) > 10
    assert poller.answers[0] == [2, 4] and poller.answers[-1] == [3, 6]
    # each answer is from one fleet or the other, never a mix, and the switch happens once
    switches = sum(1 for a, b in zip(poller.answers, poller.answers[1:]) if a != b)
    assert set(map(tuple, poller.answers)) == {(2, 4), (3, 6)} and switches == 1
    assert old.id not in [c.id for c in _containers(sagemaker_env, "bg")]
    assert sm.describe_endpoint(EndpointName="bg")["LastDeploymentConfig"][
        "BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"


def test_update_to_an_image_failing_ping_rolls_back_and_the_old_variant_serves(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    _endpoint(sm, sagemaker_env, "rb", images["hello"])
    _model(sm, sagemaker_env, "rb-m2", images["hello"], **BROKEN)
    _config(sm, "rb-c2", "rb-m2", InstanceType="ml.m5.large", InitialInstanceCount=1,
            ContainerStartupHealthCheckTimeoutInSeconds=60)
    with _poller(runtime, "rb") as poller:
        sm.update_endpoint(EndpointName="rb", EndpointConfigName="rb-c2")
        found, seen = _wait_after_update(sm, "rb")
    assert seen == ["Updating", "RollingBack", "InService"], seen
    assert found["EndpointConfigName"] == "rb-c1"
    assert found["FailureReason"] == ("The primary container for production variant AllTraffic "
                                      "did not pass the ping health check. Please check "
                                      "CloudWatch logs for this endpoint.")
    assert poller.failures == [] and set(map(tuple, poller.answers)) == {(2, 4)}
    assert len(_containers(sagemaker_env, "rb")) == 1           # the new fleet is gone
    # the broken model's traceback is in its instance's log stream
    events = sagemaker_env.client("logs").filter_log_events(
        logGroupName="/aws/sagemaker/Endpoints/rb")["events"]
    assert any("weights-missing" in e["message"] for e in events), events


def test_create_with_an_image_failing_ping_is_failed_and_can_be_deleted(sagemaker_env, images):
    sm = sagemaker_env.client("sagemaker")
    _model(sm, sagemaker_env, "bad-m1", images["hello"], **BROKEN)
    _config(sm, "bad-c1", "bad-m1")
    sm.create_endpoint(EndpointName="bad", EndpointConfigName="bad-c1")
    found, seen = _wait(sm, "bad", {"InService", "Failed"})
    assert seen == ["Creating", "Failed"] and "did not pass the ping" in found["FailureReason"]
    assert _containers(sagemaker_env, "bad") == []
    with pytest.raises(sm.exceptions.ClientError) as excinfo:   # UpdateEndpoint needs InService
        sm.update_endpoint(EndpointName="bad", EndpointConfigName="bad-c1")
    assert _error(excinfo)[0] == "ValidationException"
    sm.delete_endpoint(EndpointName="bad")
    _gone(sm, "bad")


def test_a_server_bound_to_loopback_only_fails_ping(sagemaker_env, images):
    """SageMaker reaches the container on its own address: 127.0.0.1 only never answers."""
    sm = sagemaker_env.client("sagemaker")
    sagemaker_env.faults(startup_seconds=5)        # SageMaker's minimum to set is 60 s
    _model(sm, sagemaker_env, "lo-m1", images["hello"], MLSERVE_HOST="127.0.0.1")
    _config(sm, "lo-c1", "lo-m1")
    sm.create_endpoint(EndpointName="lo", EndpointConfigName="lo-c1")
    found, _ = _wait(sm, "lo", {"InService", "Failed"})
    assert found["EndpointStatus"] == "Failed"
    assert "listens on 127.0.0.1 only" in sagemaker_env.emulator.log()


def test_serverless_variant_runs_with_its_memory_size(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    _model(sm, sagemaker_env, "sl-m1", images["hello"])
    _config(sm, "sl-c1", "sl-m1", ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 1})
    sm.create_endpoint(EndpointName="sl", EndpointConfigName="sl-c1")
    found, _ = _wait(sm, "sl", {"InService", "Failed"})
    assert found["EndpointStatus"] == "InService", found
    variant = found["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 1}
    assert "CurrentInstanceCount" not in variant
    assert _invoke(runtime, "sl", [4])["body"] == {"output": {"y": [8]}}
    (container,) = _containers(sagemaker_env, "sl")
    assert container.attrs["HostConfig"]["Memory"] == 2048 * 1024 * 1024
    described = sm.describe_endpoint_config(EndpointConfigName="sl-c1")
    assert described["ProductionVariants"][0]["ServerlessConfig"]["MaxConcurrency"] == 1

    # a request beyond MaxConcurrency in flight is throttled: one long request (a large x)
    # is in flight while short ones are sent
    import boto3
    import botocore.config
    once = boto3.client("sagemaker-runtime", config=botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1}))
    long_call = Poller(lambda: _invoke(runtime, "sl", list(range(400_000))), interval=60)
    throttled = []
    with long_call:
        deadline = time.monotonic() + 30
        while not long_call.answers and not long_call.failures and time.monotonic() < deadline:
            try:
                _invoke(once, "sl", [1])
            except once.exceptions.ClientError as exc:
                throttled.append(_error(exc))
    assert long_call.failures == [] and len(long_call.answers) == 1
    assert throttled and throttled[0][0] == "ThrottlingException", throttled
    assert _invoke(once, "sl", [1])["body"] == {"output": {"y": [2]}}


def test_two_instances_share_the_traffic(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    _model(sm, sagemaker_env, "two-m1", images["hello"])
    _config(sm, "two-c1", "two-m1", InstanceType="ml.m5.large", InitialInstanceCount=2)
    sm.create_endpoint(EndpointName="two", EndpointConfigName="two-c1")
    found, _ = _wait(sm, "two", {"InService", "Failed"})
    assert found["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    for _ in range(6):
        _invoke(runtime, "two", [1])
    logs = sagemaker_env.client("logs")
    deadline = time.monotonic() + 20
    while True:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/two")["logStreams"]
        served = [s["logStreamName"] for s in streams if any(
            "POST /invocations" in e["message"] for e in logs.get_log_events(
                logGroupName="/aws/sagemaker/Endpoints/two",
                logStreamName=s["logStreamName"])["events"])]
        if len(served) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(served) == 2, served


def test_canary_update_rolls_back_when_an_alarm_fires(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    cloudwatch = sagemaker_env.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="hello-5xx", MetricName="Invocation5XXErrors", Namespace="AWS/SageMaker",
        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold")
    _endpoint(sm, sagemaker_env, "can", images["hello"])
    _model(sm, sagemaker_env, "can-m2", images["hello"], FACTOR="3")
    _config(sm, "can-c2", "can-m2")
    with _poller(runtime, "can") as poller:
        sm.update_endpoint(EndpointName="can", EndpointConfigName="can-c2", DeploymentConfig={
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
                "Type": "CANARY", "WaitIntervalInSeconds": 30,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}}},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "hello-5xx"}]}})
        deadline = time.monotonic() + 60
        while [3, 6] not in poller.answers:           # the canary takes some traffic
            assert time.monotonic() < deadline, poller.failures[-3:]
            time.sleep(0.05)
        cloudwatch.set_alarm_state(AlarmName="hello-5xx", StateValue="ALARM",
                                   StateReason="test")
        found, seen = _wait_after_update(sm, "can")
        tail = len(poller.answers)
        time.sleep(0.3)
    assert seen == ["Updating", "RollingBack", "InService"], seen
    assert found["EndpointConfigName"] == "can-c1" and "hello-5xx" in found["FailureReason"]
    assert poller.failures == [] and {tuple(a) for a in poller.answers[tail:]} == {(2, 4)}


def test_autoscaled_variant_keeps_its_instance_type_and_is_deregistered_on_delete(sagemaker_env,
                                                                                 images):
    """SageMaker's rules for endpoints with auto scaling (developer guide, "Update or delete
    endpoints that use auto scaling"), with the scalable target registered in moto."""
    sm, scaling = sagemaker_env.client("sagemaker"), sagemaker_env.client("application-autoscaling")
    _endpoint(sm, sagemaker_env, "as", images["hello"])
    resource = "endpoint/as/variant/AllTraffic"
    scaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, MinCapacity=1, MaxCapacity=3,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    scaling.put_scaling_policy(
        PolicyName="as-invocations", ServiceNamespace="sagemaker", ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={"TargetValue": 8.0, "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    _model(sm, sagemaker_env, "as-m2", images["hello"], FACTOR="3")
    _config(sm, "as-c2", "as-m2", InstanceType="ml.c5.large", InitialInstanceCount=1)
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        sm.update_endpoint(EndpointName="as", EndpointConfigName="as-c2")
    code, message, _ = _error(excinfo)
    assert code == "ValidationException" and "DeregisterScalableTarget" in message
    _config(sm, "as-c3", "as-m2")                      # same instance type, new model: allowed
    sm.update_endpoint(EndpointName="as", EndpointConfigName="as-c3")
    found, _ = _wait_after_update(sm, "as")
    assert found["EndpointConfigName"] == "as-c3"
    sm.delete_endpoint(EndpointName="as")
    _gone(sm, "as")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []


# -- error shapes ----------------------------------------------------------------------------

def test_validation_errors_are_sagemakers(sagemaker_env, images):
    sm = sagemaker_env.client("sagemaker")
    _model(sm, sagemaker_env, "v-m1", images["hello"])
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        _config(sm, "v-c1", "v-m1", InstanceType="ml.m5.huge", InitialInstanceCount=1)
    code, message, status = _error(excinfo)
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith("1 validation error detected: Value 'ml.m5.huge' at "
                              "'productionVariants.1.member.instanceType' failed to satisfy "
                              "constraint: Member must satisfy enum value set: [")
    cases = [
        (lambda: _model(sm, sagemaker_env, "v-m1", images["hello"]),
         f'Cannot create already existing model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/v-m1".'),
        (lambda: sm.describe_model(ModelName="nope"),
         f'Could not find model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/nope".'),
        (lambda: sm.describe_endpoint_config(EndpointConfigName="nope"),
         f'Could not find endpoint configuration "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/nope".'),
        (lambda: sm.create_endpoint(EndpointName="e", EndpointConfigName="nope"),
         f'Could not find endpoint configuration "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/nope".'),
        (lambda: _config(sm, "v-c2", "missing-model"),
         f'Could not find model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/missing-model".'),
        (lambda: _model(sm, sagemaker_env, "v-m3", images["hello"].rsplit(":", 1)[0] + ":r-absent"),
         f"Requested image {images['hello'].rsplit(':', 1)[0]}:r-absent not found."),
        (lambda: _config(sm, "v-c3", "v-m1", ServerlessConfig={"MemorySizeInMB": 1500,
                                                               "MaxConcurrency": 1}),
         "Value '1500' at 'memorySizeInMB' failed to satisfy constraint: Member must be one of "
         "[1024, 2048, 3072, 4096, 5120, 6144]"),
    ]
    ec2_only = sagemaker_env.client("iam").create_role(RoleName="ec2-only", AssumeRolePolicyDocument=
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                           "Principal": {"Service": "ec2.amazonaws.com"}}]})
    )["Role"]["Arn"]
    for role in (f"arn:aws:iam::{ACCOUNT}:role/absent", ec2_only):
        cases.append((lambda role=role: sm.create_model(
            ModelName="v-m4", ExecutionRoleArn=role, PrimaryContainer={"Image": images["hello"]}),
            f"Could not assume role {role}. Please ensure that the role exists and allows "
            "principal 'sagemaker.amazonaws.com' to assume the role."))
    for call, expected in cases:
        with pytest.raises(sm.exceptions.ClientError) as excinfo:
            call()
        assert _error(excinfo) == ("ValidationException", expected, 400)


def test_quota_is_resource_limit_exceeded_naming_the_quota(sagemaker_env, images):
    sm = sagemaker_env.client("sagemaker")
    sagemaker_env.faults(quotas={"ml.g5.xlarge": 1})
    _model(sm, sagemaker_env, "q-m1", images["hello"])
    _config(sm, "q-c1", "q-m1", InstanceType="ml.g5.xlarge", InitialInstanceCount=2)
    with pytest.raises(sm.exceptions.ResourceLimitExceeded) as excinfo:
        sm.create_endpoint(EndpointName="q", EndpointConfigName="q-c1")
    code, message, status = _error(excinfo)
    assert (code, status) == ("ResourceLimitExceeded", 400)
    assert message.startswith("The account-level service limit 'ml.g5.xlarge for endpoint "
                              "usage' is 1 Instances, with current utilization of 0 Instances "
                              "and a request delta of 2 Instances.")
    assert sm.list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize("code,status", [("ThrottlingException", 400), ("InternalFailure", 500),
                                          ("ServiceUnavailable", 503)])
def test_throttling_and_5xx_are_retried_by_boto3_then_surface(sagemaker_env, code, status):
    import boto3
    import botocore.config

    sm = boto3.client("sagemaker", config=botocore.config.Config(   # 3 attempts in all
        retries={"mode": "standard", "total_max_attempts": 3}))
    sagemaker_env.faults(errors=[{"operation": "ListEndpoints", "code": code, "count": 2}])
    assert sm.list_endpoints()["Endpoints"] == []          # two failures, then the answer
    assert [c["code"] for c in sagemaker_env.calls()] == [code, code, None]
    sagemaker_env.faults(errors=[{"operation": "*", "code": code, "count": None}])
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        sm.describe_endpoint(EndpointName="x")
    assert _error(excinfo)[0] == code and _error(excinfo)[2] == status
    assert excinfo.value.response["ResponseMetadata"]["RetryAttempts"] == 2


def test_access_denied_names_the_action(sagemaker_env):
    sm = sagemaker_env.client("sagemaker")
    sagemaker_env.faults(errors=[{"operation": "CreateModel", "code": "AccessDeniedException"}])
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        sm.create_model(ModelName="m", PrimaryContainer={"Image": "x"})
    code, message, _ = _error(excinfo)
    assert code == "AccessDeniedException" and "sagemaker:CreateModel" in message
    assert sm.list_models()["Models"] == []


def test_update_and_delete_in_progress_are_refused(sagemaker_env, images):
    sm = sagemaker_env.client("sagemaker")
    sagemaker_env.faults(transition_seconds=3)
    _model(sm, sagemaker_env, "ip-m1", images["hello"])
    _config(sm, "ip-c1", "ip-m1")
    arn = sm.create_endpoint(EndpointName="ip", EndpointConfigName="ip-c1")["EndpointArn"]
    for call, verb in ((lambda: sm.delete_endpoint(EndpointName="ip"), "delete"),
                       (lambda: sm.update_endpoint(EndpointName="ip", EndpointConfigName="ip-c1"),
                        "update")):
        with pytest.raises(sm.exceptions.ClientError) as excinfo:
            call()
        assert _error(excinfo) == ("ValidationException",
                                   f'Cannot {verb} in-progress endpoint "{arn}".', 400)
    _wait(sm, "ip", {"InService"})
    sm.delete_endpoint(EndpointName="ip")
    assert sm.describe_endpoint(EndpointName="ip")["EndpointStatus"] in ("Deleting",)
    _gone(sm, "ip")
    assert _containers(sagemaker_env, "ip") == []


def test_invoke_errors_are_the_runtimes(sagemaker_env, images):
    sm, runtime = sagemaker_env.client("sagemaker"), sagemaker_env.client("sagemaker-runtime")
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        _invoke(runtime, "nowhere", [1])
    assert _error(excinfo) == ("ValidationError",
                               f"Endpoint nowhere of account {ACCOUNT} not found.", 400)
    _endpoint(sm, sagemaker_env, "inv", images["hello"])
    with pytest.raises(runtime.exceptions.ModelError) as excinfo:   # the model raises KeyError
        runtime.invoke_endpoint(EndpointName="inv", ContentType="application/json",
                                Body=json.dumps({"input": {"no-x": 1}}))
    code, message, status = _error(excinfo)
    assert (code, status) == ("ModelError", 424)
    response = excinfo.value.response
    assert response["OriginalStatusCode"] >= 400 and "from primary" in message
    assert response["LogStreamArn"].endswith("log-group:/aws/sagemaker/Endpoints/inv")
    sagemaker_env.faults(errors=[{"operation": "InvokeEndpoint", "code": "ModelNotReadyException"}])
    with pytest.raises(runtime.exceptions.ModelNotReadyException):
        _invoke(runtime, "inv", [1])
    assert _invoke(runtime, "inv", [1])["body"] == {"output": {"y": [2]}}


# -- listing and tags (what delete-by-tags uses) ---------------------------------------------

def test_list_filters_pagination_and_tags(sagemaker_env, images):
    sm = sagemaker_env.client("sagemaker")
    for index in range(5):
        _model(sm, sagemaker_env, f"app-{index}", images["hello"])
    _model(sm, sagemaker_env, "other", images["hello"])
    names = [m["ModelName"] for page in sm.get_paginator("list_models").paginate(
        NameContains="app-", PaginationConfig={"PageSize": 2}) for m in page["Models"]]
    assert sorted(names) == [f"app-{i}" for i in range(5)]
    assert [m["ModelName"] for m in sm.list_models(SortBy="Name", SortOrder="Ascending")[
        "Models"]] == [f"app-{i}" for i in range(5)] + ["other"]
    arn = sm.describe_model(ModelName="app-0")["ModelArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "mlserve:deployment", "Value": "hello"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "mlserve:release", "Value": "r-1"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["mlserve:deployment"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "mlserve:release", "Value": "r-1"}]
    sm.delete_model(ModelName="app-0")
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        sm.list_tags(ResourceArn=arn)
    assert _error(excinfo)[0] == "ValidationException"
    _config(sm, "app-c", "app-1")
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs(NameContains="app")[
        "EndpointConfigs"]] == ["app-c"]
    assert sm.list_endpoints(StatusEquals="InService")["Endpoints"] == []


# -- hostile input (no containers: these never get past validation) --------------------------

def _raw_client(emulator, service: str):
    """A boto3 client straight at the emulator that sends what it is given (no client-side
    validation, no retries)."""
    import boto3
    import botocore.config

    return boto3.client(service, endpoint_url=emulator.url, region_name=REGION,
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=botocore.config.Config(retries={"total_max_attempts": 1},
                                                      parameter_validation=False))


@settings(max_examples=60)
@given(name=st.text(max_size=80))
def test_any_model_name_is_answered_never_a_500(sagemaker_emulator, name):
    sm = _raw_client(sagemaker_emulator, "sagemaker")
    with pytest.raises(sm.exceptions.ClientError) as excinfo:     # no model exists
        sm.describe_model(ModelName=name)
    assert _error(excinfo)[0] == "ValidationException" and _error(excinfo)[2] == 400


@settings(max_examples=60)
@given(name=st.text(min_size=1, max_size=80), body=st.binary(max_size=200))
def test_any_endpoint_name_to_invoke_is_answered_never_a_500(sagemaker_emulator, name, body):
    runtime = _raw_client(sagemaker_emulator, "sagemaker-runtime")
    with pytest.raises(runtime.exceptions.ClientError) as excinfo:   # no endpoint exists
        runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")
    assert _error(excinfo)[0] == "ValidationError" and _error(excinfo)[2] == 400


@settings(max_examples=60)
@given(body=st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner,
                                                                max_size=4), max_leaves=12
).map(lambda v: json.dumps(v).encode()))
def test_any_request_body_is_answered_with_a_client_error(sagemaker_emulator, body):
    request = urllib.request.Request(
        sagemaker_emulator.url + "/", data=body, method="POST",
        headers={"X-Amz-Target": "SageMaker.CreateEndpointConfig",
                 "Content-Type": "application/x-amz-json-1.1",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/sagemaker/"
                                  "aws4_request, SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            raise AssertionError(f"accepted: {reply.read()!r}")
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read())
        assert exc.code == 400, answer
        assert answer["__type"] in ("ValidationException", "SerializationException"), answer
