"""`mlserve build`: formats by provider, reproducible output and release id, the model's files
unchanged, hostile manifest values read back exactly from every format, secrets by name only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlserve.bundle import collect
from mlserve.errors import InvalidInput
from mlserve.packaging import DEFAULT_FORMAT, FORMATS
from tests.test_package_support import (
    HOSTILE, NEWLINES, SECRET_NAME, SECRET_VALUE, build_to, make_project, tree_bytes,
)

TARGETS = {
    "local": {"provider": "local", "port": 8480},
    "box": {"provider": "ssh", "hosts": ["ubuntu@203.0.113.7"]},
    "img": {"provider": "docker", "image": "registry.example.com/team/hostile"},
    "rep": {"provider": "replicate", "model": "acme/hostile"},
    "bt": {"provider": "baseten", "model_name": "hostile-bt"},
    "vm": {"provider": "vm", "port": 9000},
}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    argv = [sys.executable, "-c", "from mlserve.cli.main import run; run()", *args]
    return subprocess.run(argv, capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    return make_project(root, env=HOSTILE, secrets=[SECRET_NAME], targets=TARGETS,
                        files={"data/weights.bin": os.urandom(1 << 20) + b"\0",
                               "helpers/util.py": "X = 1\n"})


def test_cli_json_lists_the_files_and_the_release_of_the_written_context(project, tmp_path):
    out = tmp_path / "ctx"
    done = run_cli("build", "rep", "-f", str(project), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["format"] == "cog" and info["target"] == "rep" and info["output"] == str(out)
    assert info["files"] == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert info["context"] == "sha256:" + collect(out).content_hash   # what was built
    assert info["release"].startswith("r-")             # under the model version's id


def test_cli_shows_a_tree_on_stderr(project, tmp_path):
    done = run_cli("build", "bt", "-f", str(project), "-o", str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "config.yaml" in done.stderr and "model.py" in done.stderr and "release r-" in done.stderr


def test_cli_refuses_an_unknown_format(project, tmp_path):
    done = run_cli("build", "-f", str(project), "--format", "zip", "local")
    assert done.returncode == 2 and "zip" in done.stderr


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_format_defaults_from_the_provider(project, tmp_path, target):
    result = build_to(project, None, tmp_path / "o", target=target)
    assert result.format == DEFAULT_FORMAT[TARGETS[target]["provider"]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_byte_identical_across_builds(project, tmp_path, fmt):
    first = build_to(project, fmt, tmp_path / "a", target="local")
    again = build_to(project, fmt, tmp_path / "a", target="local")   # replaces its own output
    other = build_to(project, fmt, tmp_path / "b", target="local")
    assert first.release == again.release == other.release
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


@pytest.mark.parametrize("fmt,prefix", [("cog", "app/"), ("truss", "model/app/")])
def test_model_files_are_copied_unchanged(project, tmp_path, fmt, prefix):
    build_to(project, fmt, tmp_path / "o", target="local")
    for f in collect(project.parent).files:
        assert (tmp_path / "o" / (prefix + f.path)).read_bytes() == f.source.read_bytes()


def test_release_changes_with_the_code(tmp_path):
    manifest = make_project(tmp_path / "p")
    first = build_to(manifest, "docker", tmp_path / "o")
    (tmp_path / "p" / "model.py").write_text((tmp_path / "p" / "model.py").read_text() + "# edit\n")
    assert build_to(manifest, "docker", tmp_path / "o").release != first.release


def test_refuses_to_overwrite_a_directory_it_did_not_write(project, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="not written by"):
        build_to(project, "docker", tmp_path / "mine", target="local")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_default_output_is_inside_the_state_dir_and_not_bundled(tmp_path):
    manifest = make_project(tmp_path / "p")
    result = build_to(manifest, "truss", None)
    assert Path(result.output) == tmp_path / "p" / ".mlserve" / "build" / "local-truss"
    assert not any(".mlserve/" in f for f in build_to(manifest, "truss", None).files)


@pytest.mark.parametrize("fmt", FORMATS)
def test_secret_values_are_never_written(project, tmp_path, fmt, monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    build_to(project, fmt, tmp_path / "o", target="local")
    blobs = tree_bytes(tmp_path / "o")
    assert not [p for p, data in blobs.items() if SECRET_VALUE.encode() in data]
    assert any(SECRET_NAME.encode() in data for data in blobs.values())


# --- hostile values read back exactly by each format's own parser ---------------------------

def _module_constant(path: Path, call: str) -> dict:
    """The keyword arguments of the module-level ``SHIM = Shim(...)`` call, via ast."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", "") == call:
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
    raise AssertionError(f"no {call}(...) in {path}")


@pytest.fixture(scope="module")
def newline_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("nl"), env={**HOSTILE, **NEWLINES},
                        secrets=[SECRET_NAME], targets=TARGETS)


def test_cog_wrapper_carries_env_exactly(newline_project, tmp_path):
    build_to(newline_project, "cog", tmp_path / "o", target="rep")
    shim = _module_constant(tmp_path / "o" / "predict.py", "Shim")
    assert shim["env"] == {"FACTOR": "2", **HOSTILE, **NEWLINES}
    assert shim["secret_names"] == [SECRET_NAME] and shim["entrypoint"] == "model.py:Model"
    config = yaml.safe_load((tmp_path / "o" / "cog.yaml").read_text())
    assert config == {"build": {"gpu": False, "python_version": "3.11", "sdk_version": "0.23.1"},
                      "image": "r8.im/acme/hostile", "run": "predict.py:Runner"}


def test_truss_config_and_wrapper_carry_env_exactly(newline_project, tmp_path):
    build_to(newline_project, "truss", tmp_path / "o", target="bt")
    config = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert config["environment_variables"] == {"FACTOR": "2", **HOSTILE, **NEWLINES}
    assert config["secrets"] == {SECRET_NAME: None} and config["model_name"] == "hostile-bt"
    shim = _module_constant(tmp_path / "o" / "model" / "model.py", "Shim")
    assert shim["env"] == config["environment_variables"]


def test_cloud_init_scripts_export_env_exactly(newline_project, tmp_path):
    build_to(newline_project, "cloud-init", tmp_path / "o", target="vm")
    doc = yaml.safe_load((tmp_path / "o" / "user-data").read_text())
    run = next(f["content"] for f in doc["write_files"] if f["path"].endswith("/run"))
    names = ["FACTOR", *HOSTILE, *NEWLINES, "MLSERVE_SECRET_NAMES"]
    # Everything before the final exec, then print the variables NUL-separated.
    prelude = run.split("exec ", 1)[0]
    script = prelude + "".join(f'printf "%s\\0" "${{{n}}}"\n' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True,
                         cwd=tmp_path).stdout.decode().split("\0")[:-1]
    assert dict(zip(names, out)) == {"FACTOR": "2", **HOSTILE, **NEWLINES,
                                     "MLSERVE_SECRET_NAMES": SECRET_NAME}
    assert not os.path.exists("/tmp/mlserve-pwned")


def test_dockerfile_refuses_a_line_break_it_cannot_hold(newline_project, tmp_path):
    with pytest.raises(InvalidInput, match="Dockerfile ENV"):
        build_to(newline_project, "docker", tmp_path / "o", target="img")
    assert not (tmp_path / "o").exists()


def test_requirement_items_cannot_inject_lines(tmp_path):
    manifest = make_project(tmp_path / "p", requirements=["numpy\n--index-url http://evil"])
    with pytest.raises(InvalidInput, match="line break"):
        build_to(manifest, "truss", tmp_path / "o")


def test_output_inside_the_project_is_left_out_of_later_builds(tmp_path):
    manifest = make_project(tmp_path / "p")
    first = build_to(manifest, "cog", tmp_path / "p" / "ctx")
    again = build_to(manifest, "cog", tmp_path / "p" / "ctx")
    assert first.release == again.release
    assert not [f for f in again.files if f.startswith("app/ctx/")]


def test_output_cannot_be_the_project_itself(tmp_path):
    manifest = make_project(tmp_path / "p")
    with pytest.raises(InvalidInput, match="holds the project"):
        build_to(manifest, "docker", tmp_path / "p")
    assert (tmp_path / "p" / "model.py").exists()


def test_gpu_builds_pick_a_cuda_base_and_say_what_they_cannot_know(tmp_path):
    manifest = make_project(tmp_path / "p", gpu={"type": "T4"},       # local refuses a GPU
                            targets={"img": {"provider": "docker", "image": "r.example/x"}})
    result = build_to(manifest, "docker", tmp_path / "o")
    dockerfile = (tmp_path / "o" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvidia/cuda:" in dockerfile and "python3-venv" in dockerfile
    assert any("Python 3.12" in w for w in result.warnings)   # model.python is 3.11
