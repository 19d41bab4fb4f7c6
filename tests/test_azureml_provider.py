"""The ``azureml`` provider without Azure: its options, what it refuses before any call, the
exit-3 paths (no subscription, no credential in the default chain) in clean processes, the SKU
table, the calls ``plan`` shows, and that azure-ai-ml is imported only when an azureml target is
used.

Deploys, updates, rollbacks and Azure's error shapes against the Azure ML emulator (real SDK,
real Docker) are in ``tests/test_azureml_deploy.py``.
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

from mlserve.adapters.azureml import AzureMLAdapter, endpoint_name
from mlserve.errors import ManifestError
from mlserve.manifest import load_project
from mlserve.providers.azureml import instance_table, instance_type_for
from mlserve.vocab import Action
from tests.helpers import REPO, run_cli, run_process

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
MODEL = "class Model:\n    def predict(self, payload):\n        return payload\n"


def project(root: Path, target: dict | None = None, **top) -> Path:
    """A manifest with one azureml target ``t`` (``target`` overrides its options)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(MODEL)
    data = {"name": "hello", "model": {"entrypoint": "model.py:Model"},
            "targets": {"t": {"provider": "azureml", "subscription_id": SUBSCRIPTION,
                              "resource_group": "ml-rg", "workspace": "ml-ws",
                              "registry": "myacr.azurecr.io", **(target or {})}}, **top}
    data["targets"]["t"] = {k: v for k, v in data["targets"]["t"].items() if v is not None}
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a machine with no Azure configuration at all (and no az CLI login:
    HOME is empty)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "ARM_", "AZUREML_"))
           and k != "REQUESTS_CA_BUNDLE"}
    env.update(HOME=str(tmp_path / "home"), **extra)
    # run_process adds os.environ underneath: what an earlier in-process deploy left there
    # (azure-ai-ml's AZUREML_CURRENT_CLOUD) must be overridden, not just left out
    env.update({k: "" for k in os.environ if k.startswith(
        ("AZURE_", "IDENTITY_", "MSI_", "ARM_", "AZUREML_"))})
    if "AZUREML_CURRENT_CLOUD" in env:
        env["AZUREML_CURRENT_CLOUD"] = "AzureCloud"
    return env


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("subscription_id", "not-a-guid"), ("resource_group", "a/b"), ("workspace", "w"),
    ("workspace", "x" * 40), ("registry", "Upper.azurecr.io"), ("registry", "acr.io/path"),
    ("repository", "Upper"), ("instance_type", "ml.m5.large"), ("instance_type", "Standard_x;rm"),
    ("endpoint", "1abc"), ("endpoint", "a" * 33), ("endpoint", "a_b"), ("secrets", "yes"),
    ("health_timeout", 0)])
def test_bad_options_are_refused_naming_the_field(tmp_path, capsys, field, value):
    root = project(tmp_path, {field: value})
    result = run_cli(capsys, "validate", "-f", str(root))
    assert result.code == 2, result.err
    assert f"targets.t.{field}" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("field", ["resource_group", "workspace", "registry"])
def test_required_options(tmp_path, capsys, field):
    root = project(tmp_path, {field: None})
    result = run_cli(capsys, "validate", "-f", str(root))
    assert result.code == 2 and f"targets.t.{field}" in result.err, result.err


def test_good_options_validate(tmp_path, capsys):
    root = project(tmp_path, {"instance_type": "Standard_NC4as_T4_v3", "endpoint": "hello-prod",
                              "repository": "team/hello", "secrets": "environment",
                              "registry": "127.0.0.1:5000"})
    assert run_cli(capsys, "validate", "-f", str(root)).code == 0
    target = load_project(root).manifest.targets["t"]
    assert target.health_timeout == 1800
    assert target.image_repository("hello") == "127.0.0.1:5000/team/hello"


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40))
def test_any_endpoint_name_is_valid_or_refused_by_field(tmp_path_factory, name):
    root = project(tmp_path_factory.mktemp("n"), {"endpoint": name})
    try:
        target = load_project(root).manifest.targets["t"]
    except ManifestError as exc:
        assert any("targets.t.endpoint" in p for p in exc.problems), exc.render()
        return
    assert target.endpoint == name and 3 <= len(name) <= 32 and name[0].isalpha()
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)


@settings(max_examples=60)
@given(st.text(max_size=60), st.text(min_size=1, max_size=30))
def test_default_endpoint_name_is_always_a_valid_azure_name(name, target):
    from mlserve.targets import _AZURE_ENDPOINT_RE
    ctx = type("Ctx", (), {})()
    ctx.target = type("T", (), {"endpoint": None})()
    ctx.manifest = type("M", (), {"name": name})()
    ctx.target_name = target
    assert _AZURE_ENDPOINT_RE.fullmatch(endpoint_name(ctx)), endpoint_name(ctx)


# --- the SKU table -----------------------------------------------------------------------------

@pytest.mark.parametrize("cpu, memory, gpu, count, expected", [
    (1, 1, None, 1, "Standard_DS3_v2"), (4, 14, None, 1, "Standard_DS3_v2"),
    (5, 1, None, 1, "Standard_DS4_v2"), (1, 100, None, 1, "Standard_E16s_v3"),
    (200, 1, None, 1, None), (1, 1, "t4", 1, "Standard_NC4as_T4_v3"),
    (1, 1, "A100", 3, "Standard_NC96ads_A100_v4"), (1, 1, "H100", 8, None),
    (1, 1, "TPU", 1, None)])
def test_instance_type_from_resources(cpu, memory, gpu, count, expected):
    assert instance_type_for(cpu, memory, gpu, count) == expected


def test_the_table_is_read_from_the_providers_data_file():
    data = yaml.safe_load((REPO / "providers" / "azureml.yaml").read_text())["instances"]
    assert instance_table().gpu.keys() == {k.upper() for k in data["gpu"]}
    for kind, sizes in data["gpu"].items():
        for count, sku in sizes.items():
            assert instance_type_for(1, 1, kind.lower(), count) == sku
    for row in data["cpu"]:
        assert instance_type_for(row["cpu"], row["memory_gib"], None) == row["type"]


# --- refused before any Azure call ------------------------------------------------------------

@pytest.mark.parametrize("top, words", [
    ({"secrets": ["MLSV_AZ_TOKEN"]}, ["secrets: environment", "Key Vault"]),
    ({"scaling": {"min_replicas": 0, "max_replicas": 2}}, ["at least one instance",
                                                          "min_replicas"]),
    ({"resources": {"gpu": {"type": "TPU"}}}, ["no Azure ML SKU", "instance_type"]),
])
def test_what_azureml_cannot_do_is_exit_2_before_any_call(tmp_path, top, words):
    root = project(tmp_path, **top)
    result = run_process("deploy", "t", "-f", str(root),
                         env=clean_env(tmp_path, MLSV_AZ_TOKEN="s3cr3t-value"))
    assert result.code == 2, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "s3cr3t-value" not in result.err + result.out and "Traceback" not in result.err


@pytest.mark.parametrize("subscription, words", [
    (None, ["no Azure subscription", "AZURE_SUBSCRIPTION_ID"]),
    (SUBSCRIPTION, ["DefaultAzureCredential", "AZURE_CLIENT_SECRET", "az login"])])
def test_missing_subscription_or_credentials_is_exit_3_with_the_fix(tmp_path, subscription, words):
    root = project(tmp_path, {"subscription_id": subscription})
    result = run_process("deploy", "t", "-f", str(root), env=clean_env(tmp_path))
    assert result.code == 3, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "azure.core" not in result.err


# --- plan ----------------------------------------------------------------------------------------

def test_plan_lists_the_calls_of_a_first_deploy_without_credentials(tmp_path):
    root = project(tmp_path, smoke=[{"input": 1, "expect": 1}])
    result = run_process("plan", "t", "-f", str(root), "--json", env=clean_env(tmp_path))
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["action"] == "create" and plan["live"]["state"] == "UNREACHABLE"
    calls = plan["calls"]
    order = ["onlineEndpoints: Create Or Update (key auth)", "onlineEndpoints/deployments: Create",
             "scoring URI", "onlineEndpoints: Create Or Update (traffic"]
    positions = [next(i for i, c in enumerate(calls) if c.startswith(o)) for o in order]
    assert positions == sorted(positions)
    assert not (root / ".mlserve").exists()           # plan writes nothing


def test_planned_calls_of_a_no_op_only_read(tmp_path):
    manifest = load_project(project(tmp_path)).manifest
    calls = AzureMLAdapter.planned_calls(manifest.targets["t"], manifest, Action.NONE,
                                         {"state": "READY"})
    assert calls and all(c.endswith("(read)") for c in calls)
    update = AzureMLAdapter.planned_calls(manifest.targets["t"], manifest, Action.UPDATE,
                                          {"state": "READY"})
    assert not any("key auth" in c for c in update)


# --- lazy imports --------------------------------------------------------------------------------

def test_the_adapter_and_the_cli_import_no_azure_sdk():
    code = ("import sys, mlserve.cli.main, mlserve.adapters.azureml, mlserve.adapters.azureml.steps;"
            "from mlserve.adapters import get; get('azureml');"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('azure', 'msal')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.split()
    assert loaded == []
