"""``--timeout`` and Ctrl-C on real local deploys, and the deadline's contract with the runner.

A model whose ``load()`` takes a minute is deployed over one that serves: ``--timeout 15`` exits
1 well before the load ends, Ctrl-C exits 130, and either way the previous release keeps answering, the
attempt is in the journal as failed (with the process it started), and that process is gone.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mlserve import deadline
from mlserve.adapters import phases
from mlserve.errors import MlserveError
from tests.helpers import EXAMPLES, MLSERVE, pid_alive as _alive, run_process
from tests.infra.net import free_port

SLOW_MODEL = '''
import os, time

class Model:
    def load(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))

    def predict(self, payload):
        return {"y": [v * 2 for v in payload["x"]]}
'''


def _project(tmp_path: Path) -> tuple[list[str], str, Path]:
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "hello", project)
    (project / "model.py").write_text(SLOW_MODEL)
    port = free_port()
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {port}")
                        .replace('FACTOR: "2"', 'LOAD_SECONDS: "0"'))
    return ["-f", str(project), "--state", str(tmp_path / "state")], \
        f"http://127.0.0.1:{port}", manifest


def _answers(url: str) -> dict:
    req = urllib.request.Request(url + "/predict", data=b'{"input": {"x": [1]}}',
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _last_attempt(args: list[str]) -> dict:
    from mlserve.state import State
    state = State.for_reading(Path(args[3]))
    try:
        return state.releases("local")[-1].__dict__
    finally:
        state.close()


@pytest.fixture
def serving(tmp_path):
    args, url, manifest = _project(tmp_path)
    first = run_process("deploy", *args, "--json")
    assert first.code == 0, first.err
    manifest.write_text(manifest.read_text().replace('LOAD_SECONDS: "0"', 'LOAD_SECONDS: "60"'))
    yield args, url, json.loads(first.out)["release"]
    run_process("delete", *args, "--yes")


@pytest.mark.slow
def test_deploy_timeout_exits_1_and_the_previous_release_keeps_serving(serving):
    args, url, first = serving
    started = time.monotonic()
    # 15 s: past the start of the new release even on a loaded machine, well before its
    # 60 s load (and the 120 s health timeout) ends
    result = run_process("deploy", *args, "--timeout", "15", "--json")
    took = time.monotonic() - started
    assert result.code == 1, result.err
    assert took < 50, f"--timeout 15 took {took:.1f} s"
    error = json.loads(result.out)
    assert error["exit_code"] == 1 and "timed out after 15 s" in error["message"]
    assert "--timeout" in error["fix"] and "Traceback" not in result.err
    assert _answers(url) == {"output": {"y": [2]}}
    attempt = _last_attempt(args)
    assert attempt["outcome"].value == "failed" and "timed out" in attempt["reason"]
    assert attempt["extra"].get("pid"), "the started process was journaled before the wait"
    assert not _alive(attempt["extra"]["pid"]), "the timed-out release was left running"
    status = json.loads(run_process("status", *args, "--json").out)
    assert (status["status"], status["release"]) == ("READY", first)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_json_error_and_changes_nothing(serving):
    args, url, first = serving
    proc = subprocess.Popen([*MLSERVE, "deploy", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline_at = time.monotonic() + 60
    while time.monotonic() < deadline_at and proc.poll() is None:   # the new release loads
        attempt = _last_attempt(args)
        if attempt["release_id"] != first and attempt["extra"].get("pid"):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the deploy ended before the new release was loading"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    error = json.loads(out)
    assert (error["error"], error["exit_code"]) == ("Interrupted", 130)
    assert _answers(url) == {"output": {"y": [2]}}
    attempt = _last_attempt(args)
    assert attempt["outcome"].value == "failed" and not _alive(attempt["extra"]["pid"])


def test_bad_timeouts_are_usage_errors():
    for value in ("0", "-1", "nan", "inf", "soon"):
        result = run_process("deploy", "--timeout", value)
        assert result.code == 2 and "--timeout" in result.err, (value, result.err)


# -- the deadline's contract (in process: SIGALRM on this thread) ----------------------------
def test_within_raises_once_and_only_until_disarmed():
    with pytest.raises(deadline.TimedOut) as caught:
        with deadline.within(0.05, "the test"):
            time.sleep(2)
    assert caught.value.exit_code == 1 and "the test timed out after 0.05 s" in caught.value.message
    with deadline.within(0.05, "the test"):
        deadline.point_of_no_return()
        time.sleep(0.2)                      # disarmed: no exception
    with pytest.raises(deadline.TimedOut):
        with deadline.within(0.05, "a migration", ends_at_switch=False):
            deadline.point_of_no_return()    # the switch of one target does not end it
            time.sleep(2)
    with deadline.within(None, "no limit"):
        time.sleep(0.01)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


class _Host:
    """A step of a fleet (the runner's protocol, as an adapter implements it): ``prepare``
    takes ``seconds``; records what the runner asked of it."""

    def __init__(self, label: str, seconds: float) -> None:
        self.label, self.previous, self.seconds, self.calls = label, "r-old", seconds, []

    def prepare(self) -> bool:
        self.calls.append("prepare")
        time.sleep(self.seconds)
        return True

    def activate(self) -> None:
        self.calls.append("activate")

    def finish(self) -> None:
        self.calls.append("finish")

    def abort(self) -> None:
        self.calls.append("abort")


def test_a_timeout_during_a_fleet_prepare_switches_no_host():
    hosts = [_Host(f"h{i}", 0.01 if i < 2 else 0.6) for i in range(6)]
    started = time.monotonic()
    with pytest.raises(deadline.TimedOut):
        with deadline.within(0.3, "the deploy"):
            phases.run(hosts, "r-new", max_parallel=3, max_unavailable=1)
    assert time.monotonic() - started < 3
    assert all("activate" not in h.calls for h in hosts), [h.calls for h in hosts]
    prepared = [h for h in hosts if h.calls]
    assert all(h.calls == ["prepare", "abort"] for h in prepared), [h.calls for h in hosts]
    assert len(prepared) < len(hosts), "steps still queued at the timeout were started"


def test_no_timeout_once_hosts_switch():
    hosts = [_Host(f"h{i}", 0.0) for i in range(3)]
    slow_activate = threading.Event()

    def activate(host=hosts[0]):
        host.calls.append("activate")
        time.sleep(0.4)                      # past the deadline, after the point of no return
        slow_activate.set()
    hosts[0].activate = activate
    with deadline.within(0.2, "the deploy"):
        results = phases.run(hosts, "r-new", max_parallel=3, max_unavailable=1)
    assert slow_activate.is_set() and all(r.status == phases.DEPLOYED for r in results)


def test_timed_out_is_an_mlserve_error():
    assert issubclass(deadline.TimedOut, MlserveError)


# -- the ssh provider: a real sshd on loopback ------------------------------------------------
def _processes_of(release: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and release.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid)]


@pytest.mark.slow
def test_ssh_deploy_timeout_stops_the_loading_release_and_keeps_the_old(sshd_host, tmp_path):
    from tests.ssh_models import edit, make, predict, set_version, target_for, wait_until
    state = tmp_path / "state"
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port()))
    model = manifest.parent / "model.py"
    model.write_text(model.read_text().replace(
        "    def load(self) -> None:\n",
        "    def load(self) -> None:\n"
        "        import time; time.sleep(float(os.environ.get('LOAD_SECONDS', '0')))\n"))
    args = ["box", "-f", str(manifest), "--state", str(state)]
    try:
        first = run_process("deploy", *args, "--json")
        assert first.code == 0, first.err
        url = json.loads(first.out)["url"]
        edit(manifest, env={"FACTOR": "2", "LOAD_SECONDS": "120"})
        set_version(manifest, "v2")
        started = time.monotonic()
        timed_out = run_process("deploy", *args, "--timeout", "20", "--json")
        assert timed_out.code == 1, timed_out.err
        assert time.monotonic() - started < 90, timed_out.err    # the load takes 120 s
        assert "timed out after 20 s" in json.loads(timed_out.out)["message"]
        assert predict(url)["version"] == "v1"
        from mlserve.state import State
        journal = State.for_reading(state)
        try:
            attempt = journal.releases("box")[-1]
        finally:
            journal.close()
        assert attempt.outcome.value == "failed" and "timed out" in attempt.reason
        wait_until(lambda: not _processes_of(attempt.release_id), 30,
                   "the timed-out release's processes to stop")
        assert predict(url)["version"] == "v1"
    finally:
        run_process("delete", *args, "--yes")


# -- the docker provider: the private dockerd and the local base image (root) -----------------
@pytest.mark.slow
def test_docker_deploy_timeout_removes_the_new_container_and_keeps_the_old(tmp_path, dockerd,
                                                                            base_image):
    from tests.test_docker_provider import _ours, _predict, _project as docker_project, _write
    project = docker_project(tmp_path, free_port(), free_port())
    env = dockerd.env()
    args = ["box", "-f", str(project / "mlserve.yaml"), "--state", str(tmp_path / "state")]
    try:
        first = run_process("deploy", *args, "--json", env=env)
        assert first.code == 0, first.err
        url = json.loads(first.out)["url"]
        _write(project, "v2", load="import time; time.sleep(120)")
        timed_out = run_process("deploy", *args, "--timeout", "20", "--json", env=env)
        assert timed_out.code == 1, timed_out.err
        assert "timed out after 20 s" in json.loads(timed_out.out)["message"]
        assert _predict(url)["version"] == "v1"
        assert [c.labels["org.mlserve.release"] for c in _ours(dockerd, "box")] == [
            json.loads(first.out)["release"]], "the timed-out release's container was left"
    finally:
        run_process("delete", *args, "--yes", "--purge", env=env)   # its images too: test_docker_provider counts them
