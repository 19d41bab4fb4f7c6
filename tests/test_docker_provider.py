"""The ``docker`` provider end to end: the real CLI against the private dockerd (tests/infra),
images built FROM the local base image, containers on the host network.

One deployment walks through what users do: deploy, redeploy (a code change), rollback, all
polled in a thread with zero failed requests; a broken release (the old container keeps
serving, exit 1 with the new container's log); a container killed (the engine restarts it and it
serves again); delete with the journal removed (found by label). Then an image built for one
target deployed to another with ``--image``, and an engine that does not answer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from mlserve.adapters.docker import DockerAdapter
from mlserve.errors import InvalidInput
from tests.helpers import delete_targets, run_cli, run_process
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG
from tests.infra.net import free_port

MODEL = '''
import os
VERSION = "{version}"


class Model:
    def load(self):
        {load}

    def predict(self, payload):
        return {{"y": [2 * v for v in payload["x"]], "version": VERSION}}
'''


def _write(project: Path, version: str, load: str = "pass") -> None:
    (project / "model.py").write_text(MODEL.format(version=version, load=load))


def _project(root: Path, port: int, port_b: int) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    _write(project, "v1")
    base = f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}"
    manifest = {"name": "dock", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {t: {"provider": "docker", "image": f"mlserve-test/dock-{t}",
                                "base_image": base, "port": p, "health_timeout": 60}
                            for t, p in (("box", port), ("other", port_b))}}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def _predict(url: str, timeout: float = 5) -> dict:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"input": {"x": [1, 2]}}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["output"]


class Poller:
    """Predicts every ~20 ms in a thread; every failure is kept."""

    def __init__(self, url: str) -> None:
        self.url, self.versions, self.failures = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.versions.append(_predict(self.url)["version"])
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            time.sleep(0.02)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


def _ours(dockerd, target: str) -> list:
    client = dockerd.client()
    try:
        return client.containers.list(
            all=True, filters={"label": f"org.mlserve.deployment=dock.{target}"})
    finally:
        client.close()


def _images(dockerd, target: str) -> list:
    client = dockerd.client()
    try:
        return client.images.list(name=f"mlserve-test/dock-{target}")
    finally:
        client.close()


def _wait(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def engine_env(dockerd, base_image, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    return dockerd


def _cli(capsys, project: Path, state: Path, *args: str):
    return run_cli(capsys, *args, "-f", str(project / "mlserve.yaml"), "--state", str(state))


def test_deploy_redeploy_rollback_broken_killed_and_delete(tmp_path, capsys, engine_env):
    port, port_b = free_port(), free_port()
    project, state = _project(tmp_path, port, port_b), tmp_path / "state"
    url = f"http://127.0.0.1:{port}"
    try:
        first = _cli(capsys, project, state, "deploy", "box", "--json")
        assert first.code == 0, first.err
        assert _predict(url)["version"] == "v1"
        rows = json.loads(first.out)
        assert rows["extra"]["digest"].startswith("sha256:")
        with Poller(url) as poll:
            _write(project, "v2")
            second = _cli(capsys, project, state, "deploy", "box")
            assert second.code == 0, second.err
            _wait(lambda: poll.versions[-1:] == ["v2"], 10)
            back = _cli(capsys, project, state, "rollback", "box")
            assert back.code == 0, back.err
            _wait(lambda: poll.versions[-1:] == ["v1"], 10)
        assert poll.failures == [], poll.failures[:3]
        assert {"v1", "v2"} <= set(poll.versions) and poll.versions[-1] == "v1"
        assert len(_ours(engine_env, "box")) == 1

        # A release that fails to load: removed, the old one serves, exit 1 with its log.
        _write(project, "v3", load='raise RuntimeError("weights are missing")')
        with Poller(url) as poll:
            broken = _cli(capsys, project, state, "deploy", "box")
        assert broken.code == 1
        assert "weights are missing" in broken.err
        assert poll.failures == [] and set(poll.versions) == {"v1"}
        assert len(_ours(engine_env, "box")) == 1

        # Killed: the engine restarts the container, which serves the public port again.
        (container,) = _ours(engine_env, "box")
        os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
        assert _wait(lambda: _answers(url)), "the restarted container never served again"
        assert _predict(url)["version"] == "v1"
        status = _cli(capsys, project, state, "status", "box", "--json")
        assert status.code == 0, status.err
        assert json.loads(status.out)["status"] == "READY", status.out
        logs = _cli(capsys, project, state, "logs", "box", "-n", "500")
        assert logs.code == 0, logs.err
        assert "ready: dock release" in logs.out     # the restarted runtime's own log
        said = _cli(capsys, project, state, "predict", "box", "--input", '{"x": [3]}')
        assert said.code == 0 and json.loads(said.out) == {"y": [6], "version": "v1"}

        # An image built for `box` deployed to `other`, by reference.
        ref = json.loads(first.out)["extra"]["image"]
        moved = _cli(capsys, project, state, "deploy", "other", "--image", ref, "--json")
        assert moved.code == 0, moved.err
        assert _predict(f"http://127.0.0.1:{port_b}")["version"] == "v1"

        # The journal removed: delete still finds the containers by label; images stay unless
        # --purge.
        shutil.rmtree(state)
        for target in ("box", "other"):
            gone = _cli(capsys, project, state, "delete", target, "--yes")
            assert gone.code == 0, gone.err
            assert _ours(engine_env, target) == []
        assert not _answers(url)
        assert len(_images(engine_env, "box")) == 3        # v1, v2 and the broken v3 (it built)
        purged = _cli(capsys, project, state, "delete", "box", "--yes", "--purge")
        assert purged.code == 0, purged.err
        assert _images(engine_env, "box") == []
    finally:
        for target in ("box", "other"):
            for c in _ours(engine_env, target):
                c.remove(force=True)


def _answers(url: str) -> bool:
    try:
        _predict(url, timeout=2)
        return True
    except OSError:
        return False


def test_an_engine_that_does_not_answer_exits_1_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    project = _project(tmp_path, free_port(), free_port())
    result = _cli(capsys, project, tmp_path / "state", "deploy", "box")
    assert result.code == 1, result.err
    assert "cannot reach the Docker engine" in result.err and "DOCKER_HOST" in result.err
    assert "Traceback" not in result.err


def _migrate(capsys, project: Path, state: Path, *args: str):
    result = run_cli(capsys, "migrate", *args, "-f", str(project / "mlserve.yaml"),
                     "--state", str(state), "--json", "--yes")
    return result, json.loads(result.out or "{}")


def test_migrate_local_to_docker_to_ssh(tmp_path, capsys, engine_env, sshd_host):
    """The source answers every request until the destination serves (its `migrated` event)."""
    from tests.ssh_models import target_for
    from tests.test_migrate import Poller as Timed, _migrated_at
    port, local_port, ssh_port = free_port(), free_port(), free_port()
    project, state = _project(tmp_path, port, free_port()), tmp_path / "state"
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["here"] = {"provider": "local", "port": local_port, "health_timeout": 60}
    manifest["targets"]["far"] = {"provider": "ssh",
                                  **target_for(sshd_host, tmp_path / "remote", ssh_port)}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    try:
        assert _cli(capsys, project, state, "deploy", "here").code == 0
        with Timed(f"http://127.0.0.1:{local_port}") as poll:
            result, moved = _migrate(capsys, project, state, "--from", "here", "--to", "box")
            assert result.code == 0, result.err
        assert moved["providers"] == {"from": "local", "to": "docker"}
        assert poll.ok > 0 and poll.failed_before(_migrated_at(state, "box")) == []
        assert _predict(f"http://127.0.0.1:{port}")["version"] == "v1"
        assert not _answers(f"http://127.0.0.1:{local_port}")

        with Timed(f"http://127.0.0.1:{port}") as poll:
            result, moved = _migrate(capsys, project, state, "--from", "box", "--to", "far")
            assert result.code == 0, result.err
        assert moved["providers"] == {"from": "docker", "to": "ssh"}
        assert poll.ok > 0 and poll.failed_before(_migrated_at(state, "far")) == []
        assert _predict(f"http://127.0.0.1:{ssh_port}")["version"] == "v1"
        assert _ours(engine_env, "box") == [] and not _answers(f"http://127.0.0.1:{port}")
    finally:
        delete_targets(project / "mlserve.yaml", state, "here", "box", "far")


_REF_PART = st.text(alphabet="abcXYZ019._-/:@ \t\n\x00é$;", min_size=0, max_size=30)


@settings(max_examples=25)       # each case is one CLI process (~0.5 s)
@given(ref=_REF_PART)
def test_a_malformed_image_ref_is_exit_2_before_any_engine(tmp_path_factory, ref):
    """Any text that is not an image reference is refused (exit 2, the fix named) before the
    engine is asked: DOCKER_HOST points nowhere, and a well-formed REF would be exit 1."""
    from mlserve.adapters.docker_image import IMAGE_REF_RE
    tmp = tmp_path_factory.mktemp("ref")
    project = _project(tmp, 1, 2)
    env = {"DOCKER_HOST": f"unix://{tmp}/nowhere.sock"}
    result = run_process("deploy", "box", "--image", ref, "-f", str(project / "mlserve.yaml"),
                         "--state", str(tmp / "state"), env=env) if "\x00" not in ref else None
    if result is None:      # an argv cannot hold NUL: the in-process check is what remains
        with pytest.raises(InvalidInput):
            DockerAdapter.check_image(ref)
        return
    well_formed = bool(IMAGE_REF_RE.fullmatch(ref))
    assert result.code == (1 if well_formed else 2), result.err
    assert "Traceback" not in result.err
    if not well_formed:
        assert "is not an image reference" in result.err and "REPOSITORY[:TAG]" in result.err


@pytest.mark.parametrize("ref", ["mlserve-test/dock-box:r-0123", "localhost:5000/team/m:1",
                                 "ubuntu@sha256:" + "0" * 64, "a" * 200])
def test_well_formed_refs_pass_the_check(ref):
    DockerAdapter.check_image(ref)


def test_image_on_a_target_that_runs_no_images_is_exit_2(tmp_path, capsys):
    project = _project(tmp_path, 1, 2)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["here"] = {"provider": "local", "port": free_port()}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    result = _cli(capsys, project, tmp_path / "state", "deploy", "here", "--image", "a:1")
    assert result.code == 2 and "does not run images" in result.err
    result = _cli(capsys, project, tmp_path / "state", "delete", "here", "--yes", "--purge")
    assert result.code == 2 and "keeps no images" in result.err


@pytest.mark.parametrize("image, ok", [
    ("hello", True), ("team/hello", True), ("registry.example.com/team/hello", True),
    ("localhost:5000/a/b_c__d-e.f", True), ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/m", True),
    ("hello:latest", False), ("hello@sha256:" + "0" * 64, False), ("Team/Hello", False),
    ("team/hello world", False), ("team//hello", False), ("-team/hello", False),
    ("team/hello\nRUN x", False), ("", False), ("a/" * 130 + "b", False), ("hello/", False)])
def test_the_image_repository_is_checked_at_validate(tmp_path, capsys, image, ok):
    """The target's ``image`` is a repository (the release id is the tag): anything docker's
    reference grammar refuses is exit 2 at ``validate``, naming the field and the form."""
    project = _project(tmp_path, 1, 2)
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["box"]["image"] = image
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    result = run_cli(capsys, "validate", "box", "-f", str(project / "mlserve.yaml"))
    assert result.code == (0 if ok else 2), result.err
    if not ok:
        assert "targets.box.image" in result.err, result.err
        assert ("without tag" if len(image) <= 255 else "255") in result.err, result.err
