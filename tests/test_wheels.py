"""Images that run anywhere: the docker context carries the runtime's dependencies as wheels for
the image's own Python and platform, and the runtime says which event loop and HTTP parser it runs.

- the rendered context for Python 3.11/3.12 on linux/amd64 and linux/arm64 holds one wheel per
  runtime pin, compiled ones tagged for that Python and machine (the first fetch needs the
  package index; later renders read ~/.cache/mlserve/wheels);
- the same manifest gives the same context bytes from two different caches (two machines);
- a hostile cache (truncated or garbage wheels, valid wheels for another Python, machine or OS,
  near-miss versions: generated) still gives exactly the index's wheels;
- a fetch that cannot reach an index is exit 3 naming the pip command, and leaves no partial
  cache; a platform mlserve does not build for is refused with its field path (exit 2);
- the runtime run with a uvloop compiled for another Python (the real failure: a cp313 wheel on
  3.11) warns why and reports asyncio in its first log line and /health;
- the real check: a context rendered for Python 3.13 is built FROM Debian trixie (python3.13,
  `.ci/build-base-image.sh --flavour python-trixie`, not this machine's 3.11), and the running
  container's /health reports uvloop and httptools.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlserve.errors import MissingDependency
from mlserve.packaging.runtime import runtime_pins, runtime_wheels
from tests.helpers import run_cli, run_process
from tests.infra.net import free_port
from tests.infra.policy import require, require_module, require_root
from tests.infra.procs import ComponentError
from tests.runtime_models.harness import ROOT, Runtime
from tests.test_package_support import (
    SMOKE, build_to, http_json, make_project, tree_bytes, wait_http,
)

ARCH = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
COMPILED = ("uvloop", "httptools")
TRIXIE_IMAGE = "mlserve-test/python:3.13-trixie"


def _wheels(python: str, platform: str) -> list[Path]:
    """The cached wheels, fetched first when missing (the only step that needs the index)."""
    try:
        return runtime_wheels(python, platform)
    except MissingDependency as exc:
        require("package index", f"cannot fetch the runtime's wheels: {exc.message}")


def _project(tmp: Path, python: str, platform: str | None = None, base: str | None = None) -> Path:
    target = {"provider": "docker", "image": "wheels", **({"platform": platform} if platform is not None else {}),
              **({"base_image": base} if base else {})}
    manifest = make_project(tmp, targets={"img": target})
    manifest.write_text(manifest.read_text().replace("python: '3.11'", f"python: '{python}'"))
    return manifest


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_context_holds_the_wheels_of_the_images_python_and_platform(tmp_path, python, platform):
    _wheels(python, platform)                                     # warm the cache (network once)
    ctx = tmp_path / "ctx"
    build_to(_project(tmp_path / "p", python, None if platform == "linux/amd64" else platform),
             "docker", ctx)
    names = sorted(p.name for p in (ctx / "runtime" / "wheels").iterdir())
    pins = runtime_pins(python)
    assert len(names) == len(pins)
    tag, machine = "cp" + python.replace(".", ""), ARCH[platform]
    for pin in pins:
        name, version = pin.split("==")
        (wheel,) = [n for n in names if n.startswith(f"{name}-{version}-")]
        parts = wheel[:-len(".whl")].split("-")
        if name in COMPILED:
            assert parts[2] == tag and parts[3] == tag, wheel
            assert all(p.endswith("_" + machine) for p in parts[4].split(".")), wheel
            assert "manylinux" in parts[4], wheel
        else:
            assert parts[4] == "any", wheel
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-index --find-links /opt/mlserve/wheels" in dockerfile
    for pin in pins:
        assert f"        {pin}" in dockerfile
    assert not (ctx / "runtime" / "vendor").exists()   # nothing compiled here is copied any more


def test_gpu_image_gets_the_wheels_of_the_cuda_images_python(tmp_path):
    _wheels("3.12", "linux/amd64")
    manifest = _project(tmp_path / "p", "3.11")
    manifest.write_text(manifest.read_text().replace("memory: 512Mi", "memory: 512Mi\n  gpu: {type: A10G}"))
    build_to(manifest, "docker", tmp_path / "ctx")
    compiled = [p.name for p in (tmp_path / "ctx/runtime/wheels").iterdir() if p.name.startswith("uvloop")]
    assert len(compiled) == 1 and "-cp312-cp312-" in compiled[0]   # Ubuntu 24.04's python3


def test_same_manifest_gives_the_same_context_from_another_cache(tmp_path, monkeypatch):
    _wheels("3.12", "linux/arm64")
    manifest = _project(tmp_path / "p", "3.12", "linux/arm64")
    first = build_to(manifest, "docker", tmp_path / "one")
    monkeypatch.setenv("MLSERVE_WHEEL_CACHE", str(tmp_path / "another-machine"))
    try:
        second = build_to(manifest, "docker", tmp_path / "two")   # fetched afresh
    except MissingDependency as exc:
        require("package index", exc.message)
    assert any((tmp_path / "another-machine").rglob("uvloop-*.whl"))
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    assert first.release == second.release


# Valid wheels (a zip with a WHEEL file) that only their tags rule out for cp312 on x86_64.
DECOY_TAGS = ["cp311-cp311-manylinux2014_x86_64", "cp312-cp312-manylinux2014_aarch64",
              "cp312-cp312-macosx_11_0_arm64", "cp312-cp312-win_amd64",
              "cp312-cp312-musllinux_1_1_x86_64", "cp313-cp313-manylinux_2_17_x86_64",
              "cp312-cp312-manylinux2014_x86_64.manylinux2014_aarch64", "py2-none-any",
              "cp311-none-any", "cp313-abi3-manylinux2014_x86_64"]


def _decoy(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("decoy-0.dist-info/WHEEL", "Wheel-Version: 1.0\n")


@settings(max_examples=8)   # a damaged wheel is fetched again: ~1 s each
@given(damage=st.sampled_from(["none", "truncate", "garbage", "empty"]), cut=st.floats(0.0, 0.99),
       victim=st.integers(0, 4), decoys=st.lists(st.tuples(st.integers(0, 4),
                                                          st.sampled_from(DECOY_TAGS)), max_size=6))
def test_a_hostile_cache_still_gives_exactly_the_index_wheels(damage, cut, victim, decoys):
    reference = {w.name: w.read_bytes() for w in _wheels("3.12", "linux/amd64")}
    pins = runtime_pins("3.12")
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("MLSERVE_WHEEL_CACHE")
        os.environ["MLSERVE_WHEEL_CACHE"] = tmp
        try:
            cache = Path(tmp) / "cp312-linux-amd64"
            cache.mkdir()
            for name, data in reference.items():
                (cache / name).write_bytes(data)
            spoiled = sorted(reference)[victim % len(reference)]
            data = reference[spoiled]
            if damage != "none":
                (cache / spoiled).write_bytes({"truncate": data[:int(len(data) * cut)],
                                               "garbage": os.urandom(64), "empty": b""}[damage])
            for index, tag in decoys:
                name, version = pins[index % len(pins)].split("==")
                _decoy(cache / f"{name}-{version}-{tag}.whl")
                _decoy(cache / f"{name}-{version}1-py3-none-any.whl")   # a near-miss version
            try:
                got = runtime_wheels("3.12", "linux/amd64")
            except MissingDependency as exc:
                require("package index", exc.message)
        finally:
            if old is None:
                del os.environ["MLSERVE_WHEEL_CACHE"]
            else:
                os.environ["MLSERVE_WHEEL_CACHE"] = old
        assert {w.name: w.read_bytes() for w in got} == reference
        assert not list(cache.glob(".partial-*"))


def test_unreachable_index_is_exit_3_naming_pip_and_leaves_no_partial_cache(tmp_path):
    cache = tmp_path / "cache"
    # No configuration file (this machine's pip.conf has local find-links) and a refused index.
    env = {"MLSERVE_WHEEL_CACHE": str(cache), "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
    manifest = _project(tmp_path / "p", "3.12")
    result = run_process("build", "--format", "docker", "-o", str(tmp_path / "ctx"),
                         "-f", str(manifest), env=env, timeout=120)
    assert result.code == 3, result.err
    assert "cannot fetch the runtime's wheels for Python 3.12 on linux/amd64" in result.err
    assert "pip download" in result.err and "--python-version 3.12" in result.err
    assert "Traceback" not in result.err
    assert not list(cache.rglob("*.whl")) and not list(cache.rglob(".partial-*"))


@pytest.mark.parametrize("platform", ["linux/386", "", "LINUX/AMD64", "linux/amd64 ", "windows/amd64",
                                      "linux/arm64/v8", "linux", "darwin/arm64", "linux/amd64\n",
                                      "linux/arm/v7", "amd64", "linux/s390x"])
def test_platform_mlserve_does_not_build_for_is_refused(tmp_path, capsys, platform):
    manifest = _project(tmp_path / "p", "3.11", platform)
    result = run_cli(capsys, "build", "--format", "docker", "-o", str(tmp_path / "ctx"),
                     "-f", str(manifest))
    assert result.code == 2, result.out + result.err
    assert "platform" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "ctx").exists()


def test_a_uvloop_compiled_for_another_python_is_a_warning_and_asyncio(tmp_path):
    (uvloop,) = [w for w in _wheels("3.13", "linux/amd64") if w.name.startswith("uvloop-")]
    foreign = tmp_path / "foreign"
    with zipfile.ZipFile(uvloop) as whl:          # what the old vendoring gave a 3.13 image
        whl.extractall(foreign)
    runtime = Runtime(tmp_path, env={"PYTHONPATH": f"{foreign}{os.pathsep}{ROOT}"})
    try:
        health = runtime.wait_ready()
    finally:
        runtime.stop()
    assert (health["loop"], health["http"]) == ("asyncio", "httptools")
    lines = runtime.stderr.splitlines()
    assert re.search(r"mlserve\.runtime starting: Python 3\.11\.\d+, event loop asyncio, "
                     r"HTTP parser httptools$", lines[0]), lines[0]
    assert re.search(r"warning: uvloop is installed but does not import \(\w*Error: .+\); "
                     "serving on the slower fallback", lines[1]), lines[1]


def test_runtime_on_this_machine_reports_uvloop_and_httptools(tmp_path):
    runtime = Runtime(tmp_path)
    try:
        health = runtime.wait_ready()
    finally:
        runtime.stop()
    assert (health["loop"], health["http"]) == ("uvloop", "httptools")
    assert "event loop uvloop, HTTP parser httptools" in runtime.stderr.splitlines()[0]
    assert "warning" not in runtime.stderr


# -- the real check: another Python in the image ----------------------------------------------

@pytest.fixture(scope="module")
def trixie_image(dockerd) -> str:
    """Debian trixie (python3.13) imported into the test engine: a Python this machine lacks."""
    require_root("trixie_image")
    require_module("trixie_image", "docker", "docker")
    from tests.infra.containers import rootfs_tarball
    try:
        tarball = rootfs_tarball("trixie_image", "python-trixie")
    except ComponentError as exc:
        require("trixie_image", f"no Debian trixie root filesystem (python3.13) could be built "
                f"here, so no second Python: {str(exc)[-500:]}")
    client = dockerd.client()
    repository, tag = TRIXIE_IMAGE.split(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=[
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8", 'CMD ["python3"]'])
    version = client.containers.run(TRIXIE_IMAGE, ["python3", "-c", "import platform; "
                                                   "print(platform.python_version())"],
                                    network_mode="host", remove=True).decode().strip()
    assert version.startswith("3.13."), version
    return TRIXIE_IMAGE


@pytest.mark.root
@pytest.mark.slow
def test_wheels_import_in_an_image_whose_python_differs(dockerd, trixie_image, tmp_path):
    _wheels("3.13", "linux/amd64")
    ctx = tmp_path / "ctx"
    result = build_to(_project(tmp_path / "p", "3.13", base=trixie_image), "docker", ctx)
    client = dockerd.client(timeout=600)
    image, _ = client.images.build(path=str(ctx), tag="mlserve-test/wheels:py313", rm=True,
                                   network_mode="host", buildargs={"MLSERVE_RELEASE": result.release})
    port = free_port()
    container = client.containers.run(image.id, detach=True, network_mode="host",
                                      environment={"MLSERVE_PORT": str(port)})
    try:
        status, health = wait_http(f"http://127.0.0.1:{port}/health",
                                   alive=lambda: container.reload() or container.status == "running")
        assert status == 200
        assert (health["loop"], health["http"]) == ("uvloop", "httptools"), health
        answer = http_json("POST", f"http://127.0.0.1:{port}/predict", {"input": SMOKE[0]["input"]})
        assert answer == (200, {"output": SMOKE[0]["expect"]})
        first = container.logs(stdout=False).decode().splitlines()[0]
        assert re.search(r"starting: Python 3\.13\.\d+, event loop uvloop, HTTP parser httptools$",
                         first), first
    finally:
        container.remove(force=True)
