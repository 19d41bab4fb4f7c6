"""The Cog format, proven by Cog's own server from PyPI (the version cog.yaml pins: the SDK and
the coglet server) in its own cached venv: it serves the rendered directory and POST
/predictions returns the smoke cases' outputs, with the manifest's env values reaching the model
exactly.

Cog's build (`cog build`, a Go binary) is not on PyPI: the server runs the directory the way the
image would, with the variables the build sets (COG_PREDICT_TYPE_STUB, COG_MAX_CONCURRENCY).
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mlserve.packaging.formats import COG_SDK_VERSION
from tests.infra.net import free_port
from tests.infra.procs import new_workdir, start_process, stop_process
from tests.test_package_support import (
    HOSTILE, NEWLINES, SECRET_NAME, SECRET_VALUE, SMOKE, build_to, http_json, make_project,
    tool_venv,
)

COG = f"cog=={COG_SDK_VERSION}"    # the SDK cog.yaml pins (build.sdk_version)

# What `cog build` runs in the image to derive the OpenAPI schema: any warning fails it here.
INSPECT = """
import json, sys, warnings
warnings.simplefilter("error")
sys.path.insert(0, ".")
from cog import _inspector
info = _inspector.create_predictor("predict", "Runner")
print(json.dumps({name: [f.type.primitive.name, f.type.repetition.name] for name, f in info.inputs.items()}))
print(_inspector.check_input(info.inputs, {"input": [1, {"a": None}]}) == {"input": [1, {"a": None}]})
"""


@pytest.fixture(scope="module")
def cog_venv() -> Path:
    return tool_venv("cog", COG)


def _concurrency(predict_py: Path) -> int:
    """``max`` of the ``@concurrent(max=N)`` decorator, as `cog build` reads it."""
    for node in ast.walk(ast.parse(predict_py.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "concurrent":
            return ast.literal_eval(node.keywords[0].value)
    raise AssertionError("no @concurrent in predict.py")


@pytest.mark.slow
def test_cog_server_serves_the_rendered_runner(cog_venv, tmp_path):
    manifest = make_project(tmp_path / "p", env={**HOSTILE, **NEWLINES}, secrets=[SECRET_NAME],
                            targets={"rep": {"provider": "replicate", "model": "acme/hostile"}})
    ctx = tmp_path / "ctx"
    build_to(manifest, None, ctx)
    config = yaml.safe_load((ctx / "cog.yaml").read_text())
    assert config["run"] == "predict.py:Runner" and config["build"]["python_version"] == "3.11"
    inspected = subprocess.run([str(cog_venv / "bin" / "python"), "-c", INSPECT], cwd=ctx,
                               capture_output=True, text=True, timeout=120)
    assert inspected.returncode == 0, inspected.stderr[-3000:]
    assert inspected.stdout.splitlines() == ['{"input": ["ANY", "REQUIRED"]}', "True"]
    assert config["build"]["sdk_version"] == COG_SDK_VERSION
    port = free_port()
    env = {"PATH": f"{cog_venv / 'bin'}:{os.environ['PATH']}", "PORT": str(port),
           "COG_PREDICT_TYPE_STUB": config["run"], "HOME": str(tmp_path),
           "COG_MAX_CONCURRENCY": str(_concurrency(ctx / "predict.py")), SECRET_NAME: SECRET_VALUE}
    log = new_workdir("cog") / "cog.log"
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        status, body = http_json("GET", base + "/health-check", timeout=1)
        if isinstance(body, dict) and body.get("status") == "SETUP_FAILED":
            raise AssertionError(f"Cog setup failed: {body}")
        return isinstance(body, dict) and body.get("status") == "READY"

    argv = ["env", "-C", str(ctx), str(cog_venv / "bin" / "python"), "-m", "cog.server.http",
            "--host", "127.0.0.1"]   # Cog serves the directory it runs in
    proc = start_process(argv, log, ready, "cog server", timeout=90, env=env)
    try:
        for case in SMOKE:
            status, body = http_json("POST", base + "/predictions", {"input": {"input": case["input"]}})
            assert status == 200 and body["status"] == "succeeded", body
            assert body["output"] == case["expect"]
        names = [*HOSTILE, *NEWLINES, SECRET_NAME]
        status, body = http_json("POST", base + "/predictions", {"input": {"input": {"env": names}}})
        assert body["output"] == {"env": {**HOSTILE, **NEWLINES, SECRET_NAME: SECRET_VALUE}}
    finally:
        stop_process(proc)
        log_text = log.read_text(errors="replace")
        log.unlink()
        log.parent.rmdir()
    assert "DeprecationWarning" not in log_text and "deprecated" not in log_text.lower()
