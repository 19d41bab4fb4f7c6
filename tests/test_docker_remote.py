"""The ``docker`` provider on a remote engine: ``host: ssh://USER@HOST:PORT``.

The "remote" host is the real sshd of tests/infra on loopback, whose sessions reach the private
dockerd (``SetEnv DOCKER_HOST``): the docker SDK dials it over SSH (paramiko, ``docker system
dial-stdio`` on the far side), exactly as it would a machine elsewhere. What differs from a truly
remote machine: the public port is on this machine's loopback too, so ``predict``/``status``
reach it directly. The checks of a new release do not rely on that: for any engine that is not
``unix://`` they run from inside the container through the engine's exec API
(mlserve/adapters/docker_probe.py), so this test drives that path. It proves the whole deploy,
redeploy (polled: no failed request), failed release, status, predict and delete path over an
SSH-dialled engine, with strict host keys (an unknown key is exit 3 with the fix).

A ``tcp://`` engine goes through the same code (anything not ``unix://`` is remote); it is not
started here: a plain-TCP engine is root for anyone who can reach the port.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import MLSERVE, run_process
from tests.infra.containers import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG
from tests.infra.net import free_port
from tests.infra.sshd import current_user, running_sshd

MODEL = '''
class Model:
    def load(self):
        {load}

    def predict(self, payload):
        return {{"y": [2 * v for v in payload["x"]], "version": "{version}"}}
'''


@pytest.fixture(scope="module")
def engine_over_ssh(dockerd, base_image):
    """An sshd whose sessions talk to the private dockerd."""
    with running_sshd(user=current_user(),
                      extra_config=f"SetEnv DOCKER_HOST={dockerd.host}\n") as host:
        yield host


def _home(root: Path, ssh, trusted: bool) -> Path:
    """A HOME whose ~/.ssh holds the client key (through ssh_config) and, when ``trusted``,
    the engine host's key in known_hosts (the docker SDK rejects unknown hosts)."""
    home = root / ("home" if trusted else "home-untrusting")
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "config").write_text(
        f"Host {ssh.host}\n  IdentityFile {ssh.key_path}\n  IdentitiesOnly yes\n")
    (home / ".ssh" / "known_hosts").write_text(ssh.known_hosts_line + "\n" if trusted else "")
    return home


def _project(root: Path, ssh, port: int) -> Path:
    project = root / "proj"
    project.mkdir()
    (project / "model.py").write_text(MODEL.format(load="pass", version="v1"))
    manifest = {"name": "remote", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {"far": {"provider": "docker", "image": "mlserve-test/remote-far",
                                    "base_image": f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
                                    "host": f"ssh://{ssh.user}@{ssh.host}:{ssh.port}",
                                    "port": port, "health_timeout": 60}}}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def _env(home: Path) -> dict:
    return {"HOME": str(home), "DOCKER_HOST": "",
            "MLSERVE_WHEEL_CACHE": str(Path.home() / ".cache" / "mlserve" / "wheels")}


def _version(url: str) -> str | None:
    body = json.dumps({"input": {"x": [1]}}).encode()
    request = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())["output"]["version"]
    except OSError:
        return None


def test_deploy_redeploy_broken_and_delete_over_ssh(tmp_path, dockerd, engine_over_ssh):
    port = free_port()
    project = _project(tmp_path, engine_over_ssh, port)
    env, url = _env(_home(tmp_path, engine_over_ssh, trusted=True)), f"http://127.0.0.1:{port}"
    args = ("-f", str(project), "--state", str(tmp_path / "state"))
    started = int(time.time()) - 1
    try:
        first = run_process("deploy", "far", *args, "--json", env=env, timeout=300)
        assert first.code == 0, first.err
        assert json.loads(first.out)["url"] == url
        assert _version(url) == "v1"
        client = dockerd.client()
        [container] = client.containers.list(filters={"label": "org.mlserve.deployment=remote.far"})
        execs = [e for e in client.events(since=started, until=int(time.time()) + 1, decode=True,
                                          filters={"container": container.id})
                 if e.get("Action", "").startswith("exec_start")]
        client.close()
        # The checks ran inside it: besides activation's two execs (SIGUSR1, the active mark),
        # at least one /health poll and the smoke case.
        assert len(execs) >= 4, execs

        seen, failures, stop = [], [], threading.Event()

        def poll():
            while not stop.is_set():
                version = _version(url)
                (seen if version else failures).append(version or time.monotonic())
                time.sleep(0.02)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        (project / "model.py").write_text(MODEL.format(load="pass", version="v2"))
        second = run_process("deploy", "far", *args, env=env, timeout=300)
        (project / "model.py").write_text(MODEL.format(load='raise RuntimeError("no weights")',
                                                        version="v3"))
        broken = run_process("deploy", "far", *args, env=env, timeout=300)
        stop.set()
        poller.join()
        assert second.code == 0, second.err
        assert broken.code == 1 and "no weights" in broken.err, broken.err
        assert failures == [] and seen[-1] == "v2" and "v3" not in seen

        status = run_process("status", "far", *args, "--json", env=env)
        assert status.code == 0 and json.loads(status.out)["status"] == "READY", status.out
        said = run_process("predict", "far", *args, "--input", '{"x": [4]}', env=env)
        assert said.code == 0 and json.loads(said.out) == {"y": [8], "version": "v2"}
        _follow_sees_a_new_request(args, env, url)
        gone = run_process("delete", "far", *args, "--yes", env=env)
        assert gone.code == 0, gone.err
        assert _version(url) is None
    finally:
        client = dockerd.client()
        for c in client.containers.list(all=True, filters={"label": "org.mlserve.deployment=remote.far"}):
            c.remove(force=True)
        client.close()


def _follow_sees_a_new_request(args: tuple, env: dict, url: str) -> None:
    """``logs --follow`` streams the serving container's log: a request made after it started
    shows up in it."""
    follow = subprocess.Popen([*MLSERVE, "logs", "far", *args, "-n", "5", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, **env})
    try:
        seen = threading.Event()

        def read():
            for line in follow.stdout:
                if b"POST /predict" in line:
                    seen.set()
                    return
        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not seen.is_set() and time.monotonic() < deadline:
            _version(url)
            seen.wait(0.5)
        assert seen.is_set(), "logs --follow never showed a request made while it ran"
        assert follow.poll() is None                    # still following
    finally:
        follow.kill()
        follow.wait()


def test_an_engine_host_whose_key_is_unknown_is_refused_exit_3(tmp_path, engine_over_ssh):
    project = _project(tmp_path, engine_over_ssh, free_port())
    env = _env(_home(tmp_path, engine_over_ssh, trusted=False))
    result = run_process("deploy", "far", "-f", str(project), "--state", str(tmp_path / "state"),
                         env=env, timeout=120)
    assert result.code == 3, result.err
    assert "ssh-keyscan -p" in result.err and "known_hosts" in result.err and "Traceback" not in result.err, result.err


def test_a_tcp_engine_that_does_not_answer_exits_1_with_the_fix(tmp_path, engine_over_ssh):
    project = _project(tmp_path, engine_over_ssh, free_port())
    manifest = yaml.safe_load((project / "mlserve.yaml").read_text())
    manifest["targets"]["far"]["host"] = f"tcp://127.0.0.1:{free_port()}"
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    result = run_process("deploy", "far", "-f", str(project), "--state", str(tmp_path / "state"),
                         env={"DOCKER_HOST": ""}, timeout=60)
    assert result.code == 1 and "cannot reach the Docker engine" in result.err, result.err
