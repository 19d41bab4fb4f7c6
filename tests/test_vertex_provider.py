"""The ``vertex`` provider without Google: its options, what it refuses before any call, the
exit-3 paths (no Application Default Credentials, no project) in clean processes, the machine
table, the calls ``plan`` shows, and that google-cloud-aiplatform is imported only when a
vertex target is used.

Deploys, updates, rollbacks and Google error shapes against the Vertex AI emulator (real SDK,
real Docker) are in ``tests/test_vertex_deploy.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlserve.adapters.vertex import VertexAdapter, endpoint_id, release_of
from mlserve.errors import ManifestError
from mlserve.manifest import load_project
from mlserve.providers.vertex import machine_for, machine_table
from mlserve.vocab import Action
from tests.helpers import REPO, run_cli, run_process

REPOSITORY = "us-central1-docker.pkg.dev/my-project/models/hello"
MODEL = "class Model:\n    def predict(self, payload):\n        return payload\n"


def project(root: Path, target: dict | None = None, **top) -> Path:
    """A manifest with one vertex target ``t`` (``target`` overrides its options)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(MODEL)
    data = {"name": "hello", "model": {"entrypoint": "model.py:Model"},
            "targets": {"t": {"provider": "vertex", "project": "my-project",
                              "repository": REPOSITORY, **(target or {})}}, **top}
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a machine with no Google Cloud configuration at all."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "GCLOUD_", "CLOUDSDK_"))}
    env.update(HOME=str(tmp_path / "home"), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               NO_GCE_CHECK="True", **extra)
    return env


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("project", "My_Project"), ("region", "us central"), ("machine_type", "n1 standard"),
    ("accelerator", "tesla-t4"), ("endpoint", "1-starts-with-digit"),
    ("api_endpoint", "http://vertex.example.com"), ("repository", "Bad Repo"),
    ("secrets", "vault"), ("replicas", 2)])
def test_bad_options_are_refused_naming_the_field(tmp_path, capsys, field, value):
    root = project(tmp_path, {field: value})
    result = run_cli(capsys, "validate", "-f", str(root))
    assert result.code == 2, result.err
    assert f"targets.t.{field}" in result.err, result.err


def test_good_options_validate(tmp_path, capsys):
    root = project(tmp_path, {"region": "europe-west4", "machine_type": "g2-standard-8",
                              "accelerator": "NVIDIA_L4", "endpoint": "hello-prod",
                              "api_endpoint": "https://europe-west4-aiplatform.googleapis.com",
                              "secrets": "environment"})
    assert run_cli(capsys, "validate", "-f", str(root)).code == 0
    with pytest.raises(ManifestError):          # plain HTTP only to this machine
        load_project(project(tmp_path / "b", {"api_endpoint": "http://10.0.0.1:8080"}))


@pytest.mark.parametrize("cpu, memory, gpu, count, expected", [
    (1, 1, None, 1, ("n1-standard-2", None, 0)),
    (4, 16, None, 1, ("n1-standard-8", None, 0)),
    (2, 4, "T4", 1, ("n1-standard-8", "NVIDIA_TESLA_T4", 1)),
    (2, 4, "l4", 3, ("g2-standard-48", "NVIDIA_L4", 4)),
    (2, 4, "H100", 1, ("a3-highgpu-8g", "NVIDIA_H100_80GB", 8)),
    (2, 4, "A10G", 1, None), (512, 4096, None, 1, None)])
def test_machine_from_resources(cpu, memory, gpu, count, expected):
    assert machine_for(cpu, memory, gpu, count) == expected


def test_the_table_is_read_from_the_providers_data_file():
    table = machine_table()
    data = yaml.safe_load((REPO / "providers" / "vertex.yaml").read_text())["instances"]
    assert set(table.gpu) == {k.upper() for k in data["gpu"]}
    assert [row[0] for row in table.cpu] == [row["type"] for row in data["cpu"]]


def test_release_is_read_back_from_a_model_name():
    name = "projects/p/locations/us-central1/models/hello-t-r-0123456789ab-abcdef"
    assert release_of(name) == "r-0123456789ab" and release_of(name + "@1") == "r-0123456789ab"
    assert release_of("projects/p/locations/l/models/12345") is None


@pytest.mark.parametrize("name, target", [("hello-world", "prod"), ("x" * 40, "y" * 40),
                                          ("a", "b")])
def test_default_endpoint_id_is_always_a_valid_vertex_id(tmp_path, name, target):
    import re
    from mlserve.adapters.base import Context
    from mlserve.report import Reporter
    root = project(tmp_path)
    data = yaml.safe_load((root / "mlserve.yaml").read_text())
    data["name"], data["targets"] = name, {target: data["targets"]["t"]}
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    loaded = load_project(root)
    ctx = Context(loaded, target, loaded.manifest.targets[target], Reporter(), tmp_path)
    assert re.fullmatch(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?", endpoint_id(ctx)), endpoint_id(ctx)


# --- refused before any Google call ---------------------------------------------------------

@pytest.mark.parametrize("top, target, words", [
    ({"secrets": ["MLSV_VX_TOKEN"]}, {}, ["secrets: environment", "no secret references"]),
    ({"scaling": {"min_replicas": 0, "max_replicas": 2}}, {}, ["at least one replica",
                                                               "min_replicas"]),
    ({"resources": {"gpu": {"type": "A10G"}}}, {}, ["machine_type", "A10G"]),
])
def test_what_vertex_cannot_do_is_exit_2_before_any_call(tmp_path, top, target, words):
    root = project(tmp_path, target, **top)
    result = run_process("deploy", "t", "-f", str(root),
                         env=clean_env(tmp_path, MLSV_VX_TOKEN="s3cr3t-value"))
    assert result.code == 2, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "s3cr3t-value" not in result.err + result.out and "Traceback" not in result.err


@pytest.mark.parametrize("target, extra, words", [
    ({}, {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/adc.json"},
     ["no Google Application Default Credentials", "gcloud auth application-default login"]),
    ({}, {}, ["no Google Application Default Credentials", "GOOGLE_APPLICATION_CREDENTIALS"]),
])
def test_missing_credentials_is_exit_3_with_the_fix(tmp_path, target, extra, words):
    root = project(tmp_path, target)
    result = run_process("deploy", "t", "-f", str(root), env=clean_env(tmp_path, **extra))
    assert result.code == 3, result.err
    text = " ".join(result.err.split())
    assert all(w in text for w in words), text
    assert "Traceback" not in result.err and "google.auth" not in result.err


def test_missing_project_is_exit_3_with_the_fix(tmp_path):
    from tests.infra.vertex import PROJECT
    root = project(tmp_path)
    data = yaml.safe_load((root / "mlserve.yaml").read_text())
    del data["targets"]["t"]["project"]
    (root / "mlserve.yaml").write_text(yaml.safe_dump(data))
    key = tmp_path / "adc.json"                  # an authorized_user file carries no project
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "c",
                               "client_secret": "s", "refresh_token": "r"}))
    result = run_process("deploy", "t", "-f", str(root),
                         env=clean_env(tmp_path, GOOGLE_APPLICATION_CREDENTIALS=str(key)))
    assert result.code == 3, result.err
    assert "no Google Cloud project" in result.err and "GOOGLE_CLOUD_PROJECT" in result.err
    assert PROJECT not in result.err


# --- plan ----------------------------------------------------------------------------------------

def test_plan_lists_the_calls_of_a_first_deploy_without_credentials(tmp_path):
    root = project(tmp_path, smoke=[{"input": 1, "expect": 1}])
    result = run_process("plan", "t", "-f", str(root), "--json", env=clean_env(tmp_path))
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["action"] == "create" and plan["live"]["state"] == "UNREACHABLE"
    calls = plan["calls"]
    order = ["ModelService.UploadModel", "EndpointService.CreateEndpoint",
             "EndpointService.DeployModel", "PredictionService.Predict"]
    positions = [next(i for i, c in enumerate(calls) if c.startswith(o)) for o in order]
    assert positions == sorted(positions)
    assert not (root / ".mlserve").exists()           # plan writes nothing


@pytest.mark.parametrize("action, expect, absent", [
    (Action.NONE, ["EndpointService.GetEndpoint (read)"], ["ModelService.UploadModel"]),
    (Action.UPDATE, ["EndpointService.UpdateEndpoint", "EndpointService.UndeployModel"],
     ["EndpointService.CreateEndpoint"]),
    (Action.CREATE, ["EndpointService.CreateEndpoint"], ["EndpointService.UndeployModel"])])
def test_planned_calls_by_action(tmp_path, action, expect, absent):
    manifest = load_project(project(tmp_path)).manifest
    calls = VertexAdapter.planned_calls(manifest.targets["t"], manifest, action,
                                        {"state": "READY"})
    assert all(any(c.startswith(e) for c in calls) for e in expect), calls
    assert not {c.split(" ")[0] for c in calls} & set(absent), calls
    if action is Action.NONE:
        assert all(c.endswith("(read)") for c in calls)


# --- lazy imports --------------------------------------------------------------------------------

def test_the_adapter_and_the_cli_import_no_google_sdk():
    code = ("import sys, mlserve.cli.main, mlserve.adapters.vertex, mlserve.adapters.vertex.steps;"
            "from mlserve.adapters import get; get('vertex');"
            "print(' '.join(m for m, mod in sys.modules.items() if m.startswith('google') "
            "and getattr(mod, '__file__', None)))")   # not the empty namespace packages
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.split()
    assert loaded == []
