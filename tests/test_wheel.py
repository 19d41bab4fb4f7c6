"""The built wheel, installed (not editable) into a fresh venv, works on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.infra.net import free_port

pytestmark = pytest.mark.slow


def _run(*cmd, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "build", "--wheel", "--outdir", out / "dist", REPO)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((out / "dist").glob("mlserve-*.whl"))
    venv = out / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    installed = _run(venv / "bin" / "pip", "install", "--disable-pip-version-check", "-q", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def test_wheel_ships_templates_providers_and_schema(wheel_venv):
    code = ("from mlserve.resources import templates_dir, providers_dir; "
            "import mlserve, pathlib; print(templates_dir()); print(providers_dir()); "
            "print(pathlib.Path(mlserve.__file__).parent)")
    result = _run(wheel_venv / "bin" / "python", "-c", code, cwd="/")
    assert result.returncode == 0, result.stderr
    templates, providers, package = result.stdout.split()
    assert templates.startswith(package) and providers.startswith(package)
    assert str(REPO) not in result.stdout
    assert (Path(templates) / "init" / "model.py.j2").is_file()
    assert any(Path(providers).glob("*.yaml"))


def test_wheel_help_init_validate_deploy(wheel_venv, tmp_path):
    mlserve = wheel_venv / "bin" / "mlserve"
    help_ = _run(mlserve, "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "deploy" in help_.stdout
    port = free_port()
    init = _run(mlserve, "init", "proj", "--port", port, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    valid = _run(mlserve, "validate", "-f", "proj", "--json", cwd=tmp_path)
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] is True
    deployed = _run(mlserve, "deploy", "-f", "proj", "--json", cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    try:
        predicted = _run(mlserve, "predict", "-f", "proj", "--input", '{"x": [1, 2]}', cwd=tmp_path)
        assert json.loads(predicted.stdout) == {"y": [2.0, 4.0]}
    finally:
        assert _run(mlserve, "delete", "-f", "proj", "--yes", cwd=tmp_path).returncode == 0


def test_wheel_ships_the_price_catalogue_and_the_cost_output_schema(wheel_venv, tmp_path):
    result = _run(wheel_venv / "bin" / "mlserve", "cost", "aws-ec2", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {t["catalogue"] for t in json.loads(result.stdout)["targets"]} == {"aws-ec2"}
    code = ("import mlserve, pathlib, json; p = pathlib.Path(mlserve.__file__).parent; "
            "print(json.loads((p / 'schemas' / 'output' / 'cost.json').read_text())['title'])")
    shown = _run(wheel_venv / "bin" / "python", "-c", code, cwd="/")
    assert shown.stdout.strip() == "mlserve cost --json", shown.stderr
