"""The Truss format, proven by the truss package from PyPI in its own cached venv: it loads and
validates the rendered truss and its in-process predict returns the smoke outputs; then Truss's
own model server (its build context's server/ in a venv of server/requirements.txt, started the
way its image starts it) answers the same over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.net import free_port
from tests.infra.procs import start_process, stop_process
from tests.test_package_support import (
    HOSTILE, NEWLINES, SECRET_NAME, SECRET_VALUE, SMOKE, build_to, http_json, make_project,
    tool_venv,
)

TRUSS = "truss>=0.18,<0.19"
ENV_NAMES = [*HOSTILE, *NEWLINES, SECRET_NAME]
EXPECTED_ENV = {**HOSTILE, **NEWLINES, SECRET_NAME: SECRET_VALUE}

IN_PROCESS = """
import json, sys
import truss
handle = truss.load(sys.argv[1])
handle.validate()
cases = json.loads(sys.argv[2])
outputs = [handle.predict(case) for case in cases]
handle.docker_build_setup(build_dir=__import__("pathlib").Path(sys.argv[3]))
print("RESULT " + json.dumps({"config": handle.spec.config.to_dict(verbose=False), "outputs": outputs}))
"""


@pytest.fixture(scope="module")
def truss_venv() -> Path:
    return tool_venv("truss", TRUSS)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, truss_venv):
    """The rendered truss, what truss made of it in process, and its Docker build context."""
    root = tmp_path_factory.mktemp("truss")
    manifest = make_project(root / "p", env={**HOSTILE, **NEWLINES}, secrets=[SECRET_NAME],
                            targets={"bt": {"provider": "baseten"}})
    build_to(manifest, None, root / "ctx")
    cases = [case["input"] for case in SMOKE] + [{"env": ENV_NAMES}]
    done = subprocess.run([str(truss_venv / "bin" / "python"), "-c", IN_PROCESS, str(root / "ctx"),
                           json.dumps(cases), str(root / "image")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, SECRET_NAME: SECRET_VALUE})
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    return {"root": root, "result": json.loads(line[len("RESULT "):])}


@pytest.mark.slow
def test_truss_loads_validates_and_predicts_in_process(rendered):
    result = rendered["result"]
    assert result["outputs"] == [c["expect"] for c in SMOKE] + [{"env": EXPECTED_ENV}]
    config = result["config"]
    assert config["model_name"] == "hostile" and config["python_version"] == "py311"
    assert config["environment_variables"] == {"FACTOR": "2", **HOSTILE, **NEWLINES}
    assert config["secrets"] == {SECRET_NAME: None}
    assert config["resources"]["cpu"] == "1" and config["resources"]["memory"] == "512Mi"
    assert config["runtime"]["predict_concurrency"] == 2


@pytest.mark.slow
def test_truss_model_server_answers(rendered, tmp_path):
    image = rendered["root"] / "image"
    requirements = [line.split("#", 1)[0].strip()
                    for line in (image / "server" / "requirements.txt").read_text().splitlines()]
    venv = tool_venv("truss-server", *[r for r in requirements if r and not r.startswith("-")])
    app = tmp_path / "app"                     # laid out as the image's APP_HOME
    shutil.copytree(image / "server", app)
    shutil.copytree(image / "model", app / "model")
    shutil.copy(image / "config.yaml", app / "config.yaml")
    assert yaml.safe_load((app / "config.yaml").read_text())["model_name"] == "hostile"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = ["env", "-C", str(app), str(venv / "bin" / "python"), "main.py"]
    proc = start_process(argv, tmp_path / "truss-server.log",
                         lambda: http_json("GET", base + "/v1/models/model", timeout=1)[0] == 200,
                         "truss server", timeout=90,
                         env={"PATH": os.environ["PATH"], "INFERENCE_SERVER_PORT": str(port),
                              SECRET_NAME: SECRET_VALUE, "HOME": str(tmp_path)})
    try:
        for case in SMOKE:
            assert http_json("POST", base + "/v1/models/model:predict", case["input"]) == \
                (200, case["expect"])
        assert http_json("POST", base + "/v1/models/model:predict", {"env": ENV_NAMES}) == \
            (200, {"env": EXPECTED_ENV})
    finally:
        stop_process(proc)


VALIDATE = """
import json, sys
import truss
handle = truss.load(sys.argv[1])
handle.validate()
config = handle.spec.config
print("RESULT " + json.dumps({"accelerator": str(config.resources.accelerator.accelerator.value),
                             "count": config.resources.accelerator.count,
                             "requirements": config.requirements_file,
                             "secrets": sorted(config.secrets)}))
"""


@pytest.mark.slow
def test_truss_validates_a_gpu_model_with_a_requirements_file(truss_venv, tmp_path):
    project = tmp_path / "project"
    golden = Path(__file__).with_name("golden")
    shutil.copytree(golden / "truss" / "gpu" / "project", project)
    shutil.copy(golden / "model.py", project / "model.py")
    build_to(project / "mlserve.yaml", None, tmp_path / "ctx", target="bt")
    done = subprocess.run([str(truss_venv / "bin" / "python"), "-c", VALIDATE, str(tmp_path / "ctx")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    assert json.loads(line[len("RESULT "):]) == {"accelerator": "A10G", "count": 2,
                                                 "requirements": "requirements.txt",
                                                 "secrets": ["API_TOKEN", "HF_TOKEN"]}
