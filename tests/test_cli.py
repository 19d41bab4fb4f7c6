"""The CLI as users meet it: start-up imports, help, init, schema, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, run_cli, run_process

HEAVY = ("boto3", "botocore", "google.cloud", "azure", "paramiko", "docker", "pydantic", "jinja2",
         "yaml", "uvicorn", "sqlite3")


def test_import_cli_pulls_in_no_sdk_or_heavy_module():
    # google-cloud-*'s nspkg.pth makes empty `google` / `google.cloud` namespace packages at
    # interpreter start: they have no __file__ and import nothing, so they are not counted.
    code = ("import sys, mlserve.cli.main; "
            "print('\\n'.join(sorted(m for m, mod in sys.modules.items() "
            "if getattr(mod, '__file__', None) or not hasattr(mod, '__path__'))))")
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()
    loaded = [m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []


def test_help_lists_every_command(capsys):
    result = run_cli(capsys, "--help")
    assert result.code == 0
    for command in ("init", "validate", "schema", "deploy", "predict", "status", "list", "logs",
                    "rollback", "delete", "serve", "build", "providers"):
        assert command in result.out


def test_schema_matches_committed_copy(capsys):
    result = run_cli(capsys, "schema")
    committed = (REPO / "mlserve" / "mlserve.schema.json").read_text()
    assert json.loads(result.out) == json.loads(committed), (
        "the manifest schema changed: run `mlserve schema > mlserve/mlserve.schema.json`")
    assert json.loads(result.out)["additionalProperties"] is False


def test_schema_documents_every_field():
    schema = json.loads((REPO / "mlserve" / "mlserve.schema.json").read_text())
    undocumented = []
    for name, definition in [("Manifest", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            if "description" not in spec:
                undocumented.append(f"{name}.{field}")
    assert undocumented == []


def test_init_scaffolds_a_valid_project(tmp_path, capsys):
    target = tmp_path / "My Model"
    result = run_cli(capsys, "init", str(target), "--port", "8123")
    assert result.code == 0, result.err
    assert {p.name for p in target.iterdir()} == {"model.py", "requirements.txt", "mlserve.yaml",
                                                   ".mlserveignore"}
    result = run_cli(capsys, "validate", "-f", str(target), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["name"] == "my-model"
    again = run_cli(capsys, "init", str(target))
    assert again.code == 2 and "already exists" in again.err and "--force" in again.err


def test_init_rejects_bad_name(tmp_path, capsys):
    result = run_cli(capsys, "init", str(tmp_path / "x"), "--name", "Bad_Name")
    assert result.code == 2 and "not a valid model name" in result.err


def test_usage_error_exit_2(capsys):
    result = run_cli(capsys, "deploy", "--no-such-option")
    assert result.code == 2
    assert "No such option" in result.err


def test_unknown_target_exit_2(capsys):
    result = run_cli(capsys, "status", "nope", "-f", str(REPO / "examples" / "hello"))
    assert result.code == 2
    assert "no target 'nope'" in result.err and "use one of: local" in result.err


def test_missing_secret_exit_3_and_value_never_printed(tmp_path, capsys, monkeypatch):
    run_cli(capsys, "init", str(tmp_path))
    manifest = tmp_path / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("secrets: []", "secrets: [API_TOKEN, OTHER_KEY]"))
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("OTHER_KEY", "s3cr3t-value")
    result = run_cli(capsys, "deploy", "-f", str(tmp_path), "--state", str(tmp_path / "st"))
    assert result.code == 3
    assert "API_TOKEN is not set" in result.err and "export API_TOKEN=..." in result.err
    assert "s3cr3t-value" not in result.err + result.out


def test_no_traceback_without_debug_but_with_it(tmp_path):
    (tmp_path / "mlserve.yaml").write_text("name: [\n")
    plain = run_process("validate", "-f", str(tmp_path))
    assert plain.code == 2 and "Traceback" not in plain.err
    debug = run_process("--debug", "validate", "-f", str(tmp_path))
    assert debug.code == 2 and "Traceback" in debug.err


def test_predict_rejects_bad_json(capsys):
    result = run_cli(capsys, "predict", "-f", str(REPO / "examples" / "hello"), "--input", "{x")
    assert result.code == 2 and "--input is not JSON" in result.err


def test_version(capsys):
    result = run_cli(capsys, "--version")
    assert result.code == 0 and result.out.startswith("mlserve ")


def test_not_deployed_target(tmp_path, capsys):
    result = run_cli(capsys, "logs", "-f", str(REPO / "examples" / "hello"), "--state", str(tmp_path))
    assert result.code == 2 and "is not deployed" in result.err
    listing = run_cli(capsys, "list", "-f", str(REPO / "examples" / "hello"), "--state",
                      str(tmp_path), "--json")
    assert json.loads(listing.out)["deployments"][0]["status"] == "NOT DEPLOYED"
    Path(tmp_path).exists()


def test_provider_catalogue_covers_every_target_provider(capsys):
    schema = json.loads((REPO / "mlserve" / "mlserve.schema.json").read_text())
    (targets,) = schema["properties"]["targets"]["patternProperties"].values()
    result = run_cli(capsys, "providers", "--json")
    assert result.code == 0
    names = {p["name"] for p in json.loads(result.out)["providers"]}
    assert names == set(targets["discriminator"]["mapping"])


def test_build_only_provider_says_why_it_cannot_deploy(tmp_path, capsys):
    run_cli(capsys, "init", str(tmp_path))
    manifest = tmp_path / "mlserve.yaml"
    manifest.write_text(manifest.read_text() + "  rep: {provider: replicate, model: acme/hello}\n")
    result = run_cli(capsys, "deploy", "rep", "-f", str(tmp_path), "--state", str(tmp_path / "s"))
    assert result.code == 2
    assert "cannot deploy" in result.err and "cog push" in result.err


def test_json_errors_are_data_on_stdout(tmp_path, capsys):
    result = run_cli(capsys, "validate", "-f", str(tmp_path), "--json")
    assert result.code == 2
    error = json.loads(result.out)
    assert error["exit_code"] == 2 and "no manifest" in error["message"] and error["fix"]
