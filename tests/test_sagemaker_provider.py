"""The ``sagemaker`` provider without AWS: its options, what it refuses before any call, the
exit-3 paths (no region, no credentials) in clean processes, the instance table, the calls
``plan`` shows, and that boto3 is imported only when a sagemaker target is used.

Deploys, updates, rollbacks and AWS error shapes against the SageMaker emulator (real boto3,
real Docker) are in ``tests/test_sagemaker_deploy.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from mlserve.adapters.sagemaker import SageMakerAdapter, endpoint_name, release_of
from mlserve.errors import ManifestError
from mlserve.manifest import load_project
from mlserve.providers.sagemaker import instance_table, instance_type_for
from mlserve.vocab import Action
from tests.helpers import REPO, run_cli, run_process

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
REPOSITORY = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hello"
MODEL = "class Model:\n    def predict(self, payload):\n        return payload\n"


def project(root: Path, target: dict | None = None, **top) -> Path:
    """A manifest with one sagemaker target ``t`` (``target`` overrides its options)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(MODEL)
    data = {"name": "hello", "model": {"entrypoint": "model.py:Model"},
            "targets": {"t": {"provider": "sagemaker", "role": ROLE, "repository": REPOSITORY,
                              "region": "us-east-1", **(target or {})}}, **top}
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a machine with no AWS configuration at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path / "home"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("role", "arn:aws:iam::12345:role/x"), ("role", "SageMakerExecution"),
    ("role", f"{ROLE}\nx"), ("region", "us_east_1"), ("region", "US-EAST-1"),
    ("instance_type", "m5.large"), ("instance_type", "ml.m5.large;rm"),
    ("endpoint_name", "-x"), ("endpoint_name", "a" * 51), ("endpoint_name", "a_b"),
    ("repository", "Upper/Case"), ("repository", f"{REPOSITORY}:tag"),
    ("serverless", {"memory_mb": 1000}), ("serverless", {"max_concurrency": 0}),
    ("deployment", "linear"), ("secrets", "yes"), ("rollback_alarms", ["a\nb"]),
    ("health_timeout", 0)])
def test_bad_options_are_refused_naming_the_field(tmp_path, capsys, field, value):
    root = project(tmp_path, {field: value})
    result = run_cli(capsys, "validate", "-f", str(root))
    assert result.code == 2, result.err
    assert f"targets.t.{field}" in result.err and "Traceback" not in result.err


def test_good_options_validate(tmp_path, capsys):
    root = project(tmp_path, {"instance_type": "ml.g5.xlarge", "endpoint_name": "hello-prod",
                              "deployment": "canary", "rollback_alarms": ["hello-5xx"],
                              "secrets": "environment",
                              "serverless": {"memory_mb": 4096, "max_concurrency": 20}})
    assert run_cli(capsys, "validate", "-f", str(root)).code == 0
    target = load_project(root).manifest.targets["t"]
    assert target.serverless.memory_mb == 4096 and target.health_timeout == 1800


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=80))
def test_any_endpoint_name_is_valid_or_refused_by_field(tmp_path_factory, name):
    root = project(tmp_path_factory.mktemp("n"), {"endpoint_name": name})
    try:
        target = load_project(root).manifest.targets["t"]
    except ManifestError as exc:
        assert any("targets.t.endpoint_name" in p for p in exc.problems), exc.render()
        return
    assert target.endpoint_name == name and len(name) <= 50
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)


# --- names, the instance table ---------------------------------------------------------------

@pytest.mark.parametrize("cpu, memory, gpu, count, expected", [
    (1, 1, None, 1, "ml.m5.large"), (2, 8, None, 1, "ml.m5.large"),
    (3, 1, None, 1, "ml.m5.xlarge"), (1, 20, None, 1, "ml.m5.2xlarge"),
    (200, 1, None, 1, None), (1, 1, "T4", 1, "ml.g4dn.xlarge"),
    (1, 1, "a10g", 1, "ml.g5.xlarge"), (1, 1, "A10G", 2, "ml.g5.12xlarge"),
    (1, 1, "H100", 1, "ml.p5.48xlarge"), (1, 1, "H100", 16, None), (1, 1, "TPU", 1, None)])
def test_instance_type_from_resources(cpu, memory, gpu, count, expected):
    assert instance_type_for(cpu, memory, gpu, count) == expected


def test_the_table_is_read_from_the_providers_data_file():
    """providers/sagemaker.yaml's instances decide: every GPU kind and CPU row it lists is what
    instance_type_for answers (no second copy of the table in code)."""
    data = yaml.safe_load((REPO / "providers" / "sagemaker.yaml").read_text())["instances"]
    assert instance_table().gpu.keys() == {k.upper() for k in data["gpu"]}
    for kind, row in data["gpu"].items():
        for count, size in row["sizes"].items():
            assert instance_type_for(1, 1, kind.lower(), count) == f"{row['family']}.{size}"
    for row in data["cpu"]:
        assert instance_type_for(row["cpu"], row["memory_gib"], None) == row["type"]


def test_unknown_gpu_without_instance_type_is_refused_before_aws(tmp_path, capsys):
    root = project(tmp_path, resources={"gpu": {"type": "TPU"}})
    result = run_cli(capsys, "deploy", "t", "-f", str(root))
    assert result.code == 2
    assert "instance_type" in result.err and "Traceback" not in result.err


def test_release_is_read_back_from_a_resource_name():
    assert release_of("hello-t-r-0123456789ab-abcdef") == "r-0123456789ab"
    assert release_of("hello-t") is None and release_of(None) is None


@settings(max_examples=60)
@given(st.text(max_size=60), st.text(min_size=1, max_size=30))
def test_default_endpoint_name_is_always_a_valid_sagemaker_name(name, target):
    class Ctx:
        pass
    ctx = Ctx()
    ctx.target = type("T", (), {"endpoint_name": None})()
    ctx.manifest = type("M", (), {"name": name})()
    ctx.target_name = target
    got = endpoint_name(ctx)
    if got:
        assert len(got) <= 50 and got[0].isalnum() and got[-1].isalnum()
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in got)


# --- refused before any AWS call --------------------------------------------------------------

@pytest.mark.parametrize("top, target, words", [
    ({"secrets": ["MLSV_SM_TOKEN"]}, {}, ["secrets: environment", "no secret references"]),
    ({"scaling": {"min_replicas": 0, "max_replicas": 2}}, {}, ["serverless", "min_replicas"]),
    ({"resources": {"gpu": {"type": "T4"}}}, {"serverless": {}}, ["Serverless", "gpu"]),
])
def test_what_sagemaker_cannot_do_is_exit_2_before_any_call(tmp_path, top, target, words):
    root = project(tmp_path, target, **top)
    result = run_process("deploy", "t", "-f", str(root),
                         env=clean_env(tmp_path, MLSV_SM_TOKEN="s3cr3t-value"))
    assert result.code == 2, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "s3cr3t-value" not in result.err + result.out and "Traceback" not in result.err


@pytest.mark.parametrize("region, words", [
    (None, ["no AWS region", "AWS_REGION"]),
    ("us-east-1", ["no AWS credentials", "AWS_ACCESS_KEY_ID"])])
def test_missing_region_or_credentials_is_exit_3_with_the_fix(tmp_path, region, words):
    root = project(tmp_path, {"region": region} if region else {})
    data = yaml.safe_load((root / "mlserve.yaml").read_text())
    if region is None:
        del data["targets"]["t"]["region"]
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    result = run_process("deploy", "t", "-f", str(root), env=clean_env(tmp_path))
    assert result.code == 3, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "botocore" not in result.err


# --- plan ----------------------------------------------------------------------------------------

def test_plan_lists_the_calls_of_a_first_deploy_without_credentials(tmp_path):
    root = project(tmp_path, smoke=[{"input": 1, "expect": 1}],
                   scaling={"min_replicas": 1, "max_replicas": 3})
    result = run_process("plan", "t", "-f", str(root), "--json", env=clean_env(tmp_path))
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["action"] == "create" and plan["live"]["state"] == "UNREACHABLE"
    calls = plan["calls"]
    order = ["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
             "sagemaker-runtime:InvokeEndpoint", "application-autoscaling:RegisterScalableTarget"]
    positions = [next(i for i, c in enumerate(calls) if c.startswith(o)) for o in order]
    assert positions == sorted(positions)
    assert not (root / ".mlserve").exists()           # plan writes nothing


@pytest.mark.parametrize("action, serverless, expect, absent", [
    (Action.NONE, None, ["sagemaker:DescribeEndpoint (read)"], ["sagemaker:CreateModel"]),
    (Action.UPDATE, None, ["sagemaker:UpdateEndpoint (blue/green, all-at-once)"],
     ["sagemaker:CreateEndpoint"]),
    (Action.CREATE, {"memory_mb": 2048}, ["sagemaker:CreateEndpoint"],
     ["application-autoscaling:RegisterScalableTarget"])])
def test_planned_calls_by_action(tmp_path, action, serverless, expect, absent):
    root = project(tmp_path, {"serverless": serverless} if serverless else {},
                   scaling={"min_replicas": 1, "max_replicas": 2})
    manifest = load_project(root).manifest
    calls = SageMakerAdapter.planned_calls(manifest.targets["t"], manifest, action,
                                           {"state": "READY"})
    assert all(any(c.startswith(e) for c in calls) for e in expect), calls
    assert not {c.split(" ")[0] for c in calls} & set(absent), calls
    if action is Action.NONE:
        assert all(c.endswith("(read)") for c in calls)


# --- lazy imports --------------------------------------------------------------------------------

def test_the_adapter_and_the_cli_import_no_boto3():
    code = ("import sys, mlserve.cli.main, mlserve.adapters.sagemaker, mlserve.adapters.sagemaker.steps;"
            "from mlserve.adapters import get; get('sagemaker');"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.split()
    assert loaded == []
