"""The Cog format, proven by Cog's own server from PyPI (the version cog.yaml pins: the SDK and
the coglet server) in its own cached venv: it serves the rendered directory and POST
/predictions returns the smoke cases' outputs, with the manifest's env values reaching the model
exactly; with ``model.inputs``, each field is a typed parameter whose type, description,
default and constraints Cog's inspector reads back as the manifest wrote them.

Cog's build (`cog build`, a Go binary) is not on PyPI: the server runs the directory the way the
image would, with the variables the build sets (COG_PREDICT_TYPE_STUB, COG_MAX_CONCURRENCY).
"""

from __future__ import annotations

import ast
import contextlib
import json
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

# Cog's Python inspector on the runner, as the server runs it (and as `cog build` did before it
# read the signature statically, in Go, which PyPI does not ship): any warning fails it here.
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


def inspect(cog_venv: Path, ctx: Path, script: str = INSPECT) -> list[str]:
    """Run ``script`` (Cog's inspector on predict.py:Runner) in ``ctx``; its stdout lines."""
    inspected = subprocess.run([str(cog_venv / "bin" / "python"), "-c", script], cwd=ctx,
                               capture_output=True, text=True, timeout=120)
    assert inspected.returncode == 0, inspected.stderr[-3000:]
    return inspected.stdout.splitlines()


@contextlib.contextmanager
def cog_server(cog_venv: Path, ctx: Path, config: dict, tmp_path: Path, env: dict):
    """Cog's HTTP server on ``ctx``, as the image runs it; yields ``post(body)`` to
    /predictions. On the way out: no deprecation warning in its log."""
    port = free_port()
    env = {"PATH": f"{cog_venv / 'bin'}:{os.environ['PATH']}", "PORT": str(port),
           "COG_PREDICT_TYPE_STUB": config["run"], "HOME": str(tmp_path),
           "COG_MAX_CONCURRENCY": str(_concurrency(ctx / "predict.py")), **env}
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
        yield lambda body: http_json("POST", base + "/predictions", body)
    finally:
        stop_process(proc)
        log_text = log.read_text(errors="replace")
        log.unlink()
        log.parent.rmdir()
    assert "DeprecationWarning" not in log_text and "deprecated" not in log_text.lower()


@pytest.mark.slow
def test_cog_server_serves_the_rendered_runner(cog_venv, tmp_path):
    manifest = make_project(tmp_path / "p", env={**HOSTILE, **NEWLINES}, secrets=[SECRET_NAME],
                            targets={"rep": {"provider": "replicate", "model": "acme/hostile"}})
    ctx = tmp_path / "ctx"
    build_to(manifest, None, ctx)
    config = yaml.safe_load((ctx / "cog.yaml").read_text())
    assert config["run"] == "predict.py:Runner" and config["build"]["python_version"] == "3.11"
    assert inspect(cog_venv, ctx) == ['{"input": ["ANY", "REQUIRED"]}', "True"]
    assert config["build"]["sdk_version"] == COG_SDK_VERSION
    with cog_server(cog_venv, ctx, config, tmp_path, {SECRET_NAME: SECRET_VALUE}) as post:
        for case in SMOKE:
            status, body = post({"input": {"input": case["input"]}})
            assert status == 200 and body["status"] == "succeeded", body
            assert body["output"] == case["expect"]
        names = [*HOSTILE, *NEWLINES, SECRET_NAME]
        status, body = post({"input": {"input": {"env": names}}})
        assert body["output"] == {"env": {**HOSTILE, **NEWLINES, SECRET_NAME: SECRET_VALUE}}


#: A model whose payload fields Cog types one by one; ``echo`` returns the payload it got and
#: then mutates it, as models may.
TYPED_MODEL = """import os


class Model:
    def load(self):
        self.factor = int(os.environ.get("FACTOR", "2"))

    def predict(self, payload):
        if payload["echo"]:
            snapshot = {**payload, "options": dict(payload["options"]), "tags": list(payload["tags"])}
            payload["options"]["mutated"] = True
            payload["tags"].append("mutated")
            return snapshot
        return {"y": [v * self.factor for v in payload["x"]]}
"""
HOSTILE_TEXT = "it's \"quoted\" `not run` $(nor this)\nline two: héllo ✓ 🚀 中文"
TYPED_INPUTS = {
    "x": {"type": "array", "items": "number", "description": "Numbers to double"},
    "scale": {"type": "integer", "description": HOSTILE_TEXT, "default": 3, "ge": 1, "le": 10},
    "mode": {"type": "string", "choices": ["fast", HOSTILE_TEXT], "default": HOSTILE_TEXT},
    "temperature": {"type": "number", "default": 0.5, "ge": 0, "le": 1.5},
    "echo": {"type": "boolean", "default": False},
    "tags": {"type": "array", "items": "string", "default": ["a", "b"]},
    "options": {"type": "object", "default": {"beam": 4}},
}
#: The input properties Cog's inspector must read from predict.py: (JSON type, description,
#: default, choices, ge, le), straight from the manifest.
EXPECTED_PROPERTIES = {
    "x": [{"type": "array", "items": {"type": "number"}}, "Numbers to double", None, None, None, None],
    "scale": [{"type": "integer"}, HOSTILE_TEXT, 3, None, 1, 10],
    "mode": [{"type": "string"}, None, HOSTILE_TEXT, ["fast", HOSTILE_TEXT], None, None],
    "temperature": [{"type": "number"}, None, 0.5, None, 0, 1.5],
    "echo": [{"type": "boolean"}, None, False, None, None, None],
    "tags": [{"type": "array", "items": {"type": "string"}}, None, ["a", "b"], None, None, None],
    "options": [{"type": "object"}, None, {"beam": 4}, None, None, None],
}
INSPECT_TYPED = """
import json, sys, warnings
warnings.simplefilter("error")
sys.path.insert(0, ".")
from cog import _inspector
info = _inspector.create_predictor("predict", "Runner")
print(json.dumps({name: [f.type.json_type(), f.description, f.default, f.choices, f.ge, f.le]
                  for name, f in info.inputs.items()}, ensure_ascii=False))
for bad in ({}, {"x": [1], "scale": 11}, {"x": [1], "mode": "slow"}, {"x": ["a"]}):
    try:
        _inspector.check_input(info.inputs, bad)
        print("accepted", bad)
    except ValueError as exc:
        print("refused", str(exc).split(":")[0].split(" ")[0])
"""


def typed_project(root: Path, inputs: dict, **kw) -> Path:
    """The test project with ``model.inputs`` (and the typed model); returns the manifest."""
    manifest = make_project(root, files={"model.py": TYPED_MODEL}, **kw)
    doc = yaml.safe_load(manifest.read_text())
    doc["model"]["inputs"] = inputs
    doc["smoke"] = [{"input": {"x": [1, 2, 3]}, "expect": {"y": [2, 4, 6]}}]
    manifest.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return manifest


@pytest.mark.slow
def test_cog_server_serves_typed_inputs(cog_venv, tmp_path):
    manifest = typed_project(tmp_path / "p", TYPED_INPUTS,
                             targets={"rep": {"provider": "replicate", "model": "acme/typed"}})
    ctx = tmp_path / "ctx"
    build_to(manifest, None, ctx)
    config = yaml.safe_load((ctx / "cog.yaml").read_text())
    properties, *refusals = inspect(cog_venv, ctx, INSPECT_TYPED)
    assert json.loads(properties) == EXPECTED_PROPERTIES
    assert list(json.loads(properties)) == list(TYPED_INPUTS)      # Cog's x-order: the manifest's
    assert refusals == ["refused x", "refused scale", "refused mode", "refused x"]
    with cog_server(cog_venv, ctx, config, tmp_path, {}) as post:
        status, body = post({"input": {"x": [1, 2, 3]}})
        assert status == 200 and body["status"] == "succeeded", body
        assert body["output"] == {"y": [2, 4, 6]}
        defaults = {name: spec["default"] for name, spec in TYPED_INPUTS.items() if "default" in spec}
        for _ in range(2):   # the model mutated the first payload: the defaults stay as declared
            status, body = post({"input": {"x": [1], "echo": True}})
            assert status == 200 and body["output"] == {**defaults, "x": [1], "echo": True}, body
    # Cog 0.23's server validates requests against the OpenAPI schema `cog build` bundles
    # (.cog/openapi_schema.json, from its static reading of the same signature); without one it
    # passes inputs through, so the refusals are checked with the inspector above.
