"""The local target end to end, through the real CLI and real processes on loopback.

One long lifecycle test keeps a poller hitting the public port throughout every redeploy, broken
deploy and rollback, and asserts that not one request failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, pid_alive as _pid_alive, run_process
from tests.infra.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _delete_left_deployments(tmp_path):
    """Whatever a test leaves deployed (a failed assertion skips its own delete) is stopped."""
    yield
    project, state = tmp_path / "proj", tmp_path / "state"
    if (project / "mlserve.yaml").exists() and state.exists():
        from mlserve import service
        from mlserve.errors import MlserveError
        try:
            service.delete(project, None, state)
        except MlserveError:
            pass                                  # nothing deployed: nothing to stop


def _project(tmp_path: Path, name: str = "hello") -> tuple[Path, int]:
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLES / name, project)
    port = free_port()
    manifest = project / "mlserve.yaml"
    text = manifest.read_text()
    text = text.replace("port: 8480", f"port: {port}").replace("port: 8481", f"port: {port}")
    manifest.write_text(text)
    return project, port


def _post(url: str, payload) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"input": payload}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


class Poller(threading.Thread):
    """Sends a prediction every few ms and records every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.ok, self.failures = url, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = _post(self.url, {"x": [1]})
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(status)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            time.sleep(0.005)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_lifecycle(tmp_path):
    project, port = _project(tmp_path)
    state = str(tmp_path / "state")
    args = ["-f", str(project), "--state", state]
    url = f"http://127.0.0.1:{port}"

    first = run_process("deploy", *args, "--json")
    assert first.code == 0, first.err
    info = json.loads(first.out)
    assert {"target", "provider", "release", "url", "status"} <= set(info)
    assert (info["target"], info["provider"], info["url"], info["status"]) == ("local", "local", url, "READY")
    assert _post(url, {"x": [1, 2]}) == (200, {"output": {"y": [2, 4]}})
    predicted = run_process("predict", *args, "--input", '{"x": [5]}')
    assert predicted.code == 0 and json.loads(predicted.out) == {"y": [10]}

    poller = Poller(url)
    poller.start()
    try:
        # Same files -> same release id, nothing restarted.
        again = run_process("deploy", *args, "--json")
        assert again.code == 0 and json.loads(again.out)["release"] == info["release"]
        assert json.loads(again.out)["changed"] is False

        # A real change: a new release, beside the old, then switched.
        manifest = project / "mlserve.yaml"
        manifest.write_text(manifest.read_text().replace('FACTOR: "2"', 'FACTOR: "3"')
                            .replace("expect: {y: [2, 4, 6]}", "expect: {y: [3, 6, 9]}"))
        second = run_process("deploy", *args, "--json")
        assert second.code == 0, second.err
        second_id = json.loads(second.out)["release"]
        assert second_id != info["release"]
        assert _post(url, {"x": [1]})[1] == {"output": {"y": [3]}}
        assert not _pid_alive(info and json.loads(first.out)["extra"]["pid"])

        # A release that fails to load: exit 1, the reason and log tail, the old one serves.
        model = project / "model.py"
        good_code = model.read_text()
        model.write_text(good_code + "\nraise RuntimeError('boom while importing')\n")
        broken = run_process("deploy", *args)
        assert broken.code == 1
        assert "failed" in broken.err and "boom while importing" in broken.err
        assert "previous release is still serving" in broken.err
        assert "Traceback (most recent call last)" in broken.err  # the model's, from the log tail
        assert _post(url, {"x": [1]})[1] == {"output": {"y": [3]}}
        model.write_text(good_code)

        # A release whose smoke case fails: exit 1, old one serves.
        manifest.write_text(manifest.read_text().replace("expect: {y: [3, 6, 9]}", "expect: {y: [0]}"))
        mismatch = run_process("deploy", *args)
        assert mismatch.code == 1
        assert "smoke case 1: expected" in mismatch.err
        assert _post(url, {"x": [1]})[1] == {"output": {"y": [3]}}

        # Rollback: to the previous release (FACTOR 2), then --to the second one.
        back = run_process("rollback", *args, "--json")
        assert back.code == 0, back.err
        assert json.loads(back.out)["release"] == info["release"]
        assert _post(url, {"x": [1]})[1] == {"output": {"y": [2]}}
        forth = run_process("rollback", *args, "--to", second_id[:6], "--json")
        assert forth.code == 0, forth.err
        assert _post(url, {"x": [1]})[1] == {"output": {"y": [3]}}
    finally:
        poller.stop.set()
        poller.join()
    assert poller.failures == [], poller.failures[:5]
    assert poller.ok > 20

    status = run_process("status", *args, "--json")
    st = json.loads(status.out)
    assert st["status"] == "READY" and st["release"] == second_id
    outcomes = [r["outcome"] for r in st["releases"]]
    assert outcomes.count("failed") == 2 and outcomes[0] == "serving"
    logs = run_process("logs", *args, "-n", "50")
    assert logs.code == 0 and "POST /predict 200" in logs.out
    pid = st["extra"]["pid"]

    deleted = run_process("delete", *args, "--json")
    assert deleted.code == 0 and json.loads(deleted.out)["status"] == "DELETED"
    assert not _pid_alive(pid)
    assert not _port_open(port)
    after = json.loads(run_process("status", *args, "--json").out)
    assert after["status"] == "DELETED"
    # The history says what became of the release that served until the delete.
    assert [r["outcome"] for r in after["releases"][:2]] == ["deleted", "deleted"]
    assert after["releases"][1]["release"] == second_id
    assert "serving" not in [r["outcome"] for r in after["releases"]]
    assert not (Path(state) / "local" / "local").exists()


def test_dead_process_is_reported_and_redeploy_restarts_it(tmp_path):
    project, port = _project(tmp_path)
    args = ["-f", str(project), "--state", str(tmp_path / "state")]
    first = json.loads(run_process("deploy", *args, "--json").out)
    os.kill(first["extra"]["pid"], signal.SIGKILL)
    time.sleep(0.2)
    st = json.loads(run_process("status", *args, "--json").out)
    assert st["status"] == "FAILED" and "not running" in st["detail"]
    again = run_process("deploy", *args, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["release"] == first["release"]
    assert _post(f"http://127.0.0.1:{port}", {"x": [2]})[1] == {"output": {"y": [4]}}
    assert run_process("delete", *args, "--yes").code == 0


def test_second_concurrent_deploy_is_refused(tmp_path):
    project, port = _project(tmp_path)
    model = project / "model.py"
    model.write_text(model.read_text().replace("def load(self) -> None:",
                                               "def load(self) -> None:\n        import time; time.sleep(3)"))
    args = ["-f", str(project), "--state", str(tmp_path / "state")]
    env = {**os.environ, "COLUMNS": "200"}
    slow = subprocess.Popen([sys.executable, "-m", "mlserve.cli", "deploy", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 10
        lock = tmp_path / "state" / "locks" / "local.lock"
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_process("deploy", *args)
        assert second.code == 1
        assert "target 'local' is busy: deploy by pid" in second.err
        assert "Traceback" not in second.err
    finally:
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert run_process("delete", *args, "--yes").code == 0


def test_secrets_reach_the_model_but_never_state_or_logs(tmp_path):
    project, port = _project(tmp_path)
    (project / "model.py").write_text(
        "import os\n\nclass Model:\n    def load(self):\n        self.token = os.environ['API_TOKEN']\n"
        "    def predict(self, payload):\n        if payload == 'leak':\n"
        "            raise ValueError('bad token ' + self.token)\n"
        "        return {'has_token': len(self.token) > 0}\n")
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("env:", "secrets: [API_TOKEN]\nenv:")
                        .replace("expect: {y: [2, 4, 6]}", "expect: {has_token: true}"))
    secret = "tok-" + "x9Q" * 8
    state = tmp_path / "state"
    args = ["-f", str(project), "--state", str(state)]
    result = run_process("deploy", *args, env={"API_TOKEN": secret})
    assert result.code == 0, result.err
    url = f"http://127.0.0.1:{port}"
    assert _post(url, {"x": 1})[1] == {"output": {"has_token": True}}
    try:
        _post(url, "leak")
    except urllib.error.HTTPError as exc:
        assert exc.code == 500
        assert secret not in exc.read().decode()
    time.sleep(0.5)  # let the access log flush
    for path in state.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.err + result.out
    assert run_process("delete", *args, "--yes").code == 0


def test_port_used_by_another_program(tmp_path):
    project, port = _project(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_process("deploy", "-f", str(project), "--state", str(tmp_path / "state"))
    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is used by another program" in result.err


def test_iris_example_with_requirements_and_artifact(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is part of the test extra")
    project, port = _project(tmp_path, "iris")
    args = ["-f", str(project), "--state", str(tmp_path / "state")]
    result = run_process("deploy", *args, "--json", timeout=600)
    assert result.code == 0, result.err
    assert not any(f.name == "train.py" for f in (tmp_path / "state").rglob("train.py"))
    status, body = _post(f"http://127.0.0.1:{port}", {"features": [6.7, 3.0, 5.2, 2.3]})
    assert body["output"]["class"] == "virginica"
    venvs = [v for v in (tmp_path / "state" / "venvs").iterdir() if v.is_dir()]
    assert len(venvs) == 1 and (venvs[0] / ".complete").exists()
    built_at = (venvs[0] / ".complete").stat().st_mtime_ns
    # A code change with the same requirements reuses the venv.
    model = project / "model.py"
    model.write_text(model.read_text() + "\n# a comment\n")
    again = run_process("deploy", *args, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["release"] != json.loads(result.out)["release"]
    assert "building a venv" not in again.err
    assert [v for v in (tmp_path / "state" / "venvs").iterdir() if v.is_dir()] == venvs
    assert (venvs[0] / ".complete").stat().st_mtime_ns == built_at
    assert run_process("delete", *args, "--yes").code == 0


def test_logs_follow_streams_new_lines(tmp_path):
    project, port = _project(tmp_path)
    args = ["-f", str(project), "--state", str(tmp_path / "state")]
    assert run_process("deploy", *args).code == 0
    follower = subprocess.Popen([sys.executable, "-m", "mlserve.cli", "logs", *args, "--follow", "-n", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = follower.stdout.readline()          # the history line
        assert first
        _post(f"http://127.0.0.1:{port}", {"x": [7]})
        deadline = time.monotonic() + 10
        seen = ""
        while "POST /predict 200" not in seen and time.monotonic() < deadline:
            seen = follower.stdout.readline()
        assert "POST /predict 200" in seen
    finally:
        follower.terminate()
        follower.wait(10)
    assert run_process("delete", *args, "--yes").code == 0
