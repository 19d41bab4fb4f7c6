"""The ssh provider end to end against real OpenSSH servers on loopback (tests.infra.sshd).

Every test drives ``mlserve.service`` (what the CLI calls) or the CLI itself; the host is a
real sshd, the runtime a real process started over SSH. Pollers hit the public port during
redeploys and failures, and every failed request is a failed test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from mlserve import service
from mlserve.errors import DeployError, MlserveError
from tests.helpers import run_cli
from tests.infra.net import free_port, port_open
from tests.infra.policy import require_tool
from tests.ssh_models import (VersionPoller, answers, deploy_failing_load, edit, edit_target,
                              health, make, predict, set_version, target_for, wait_until)
from tests.ssh_models import undeploy_afterwards  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_deploy_noop_one_file_redeploy_rollback_logs_status_delete(sshd_host, tmp_path):
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port()))
    state = tmp_path / "state"

    first = service.deploy(manifest, "box", state)
    [host] = first.extra["hosts"]
    assert (host["status"], host["release"], host["reason"]) == ("deployed", first.release, None)
    assert host["supervision"] == "setsid"          # no systemd on the test machine
    assert first.extra["transfer"]["files_sent"] > 50    # bundle + runtime library + helper
    url = first.url
    assert predict(url) == {"y": [2, 4], "version": "v1", "pid": host["pid"],
                            "host": predict(url)["host"]}

    with VersionPoller(url) as poller:
        again = service.deploy(manifest, "box", state)
        assert not again.changed
        assert again.extra["transfer"]["file_bytes_sent"] == 0
        assert again.extra["transfer"]["files_sent"] == 0

        set_version(manifest, "v2")
        second = service.deploy(manifest, "box", state)
        model_size = (manifest.parent / "model.py").stat().st_size
        assert second.extra["transfer"]["files_sent"] == 1
        assert second.extra["transfer"]["file_bytes_sent"] == model_size
        assert predict(url)["version"] == "v2"
        assert not _alive(host["pid"]), "the old release was not stopped"

        back = service.rollback(manifest, "box", state)
        assert back.release == first.release
        assert back.extra["transfer"]["file_bytes_sent"] == 0   # the release was still there
        assert predict(url)["version"] == "v1"
    assert poller.failures == [], poller.failures[:5]
    assert poller.versions == ["v1", "v2", "v1"]

    info = service.status(manifest, "box", state)
    assert (info["status"], info["release"]) == ("READY", first.release)
    assert info["extra"]["hosts"][0]["status"] == "READY"
    lines = list(service.logs(manifest, "box", state, lines=50))
    assert any("activated on 127.0.0.1" in line for line in lines)
    _follow_sees_a_new_request(manifest, state, url, remote)
    assert service.predict(manifest, "box", state, {"x": [3]})[1]["output"]["y"] == [6]

    # supervision: the runtime is restarted on the public port when it dies while serving
    pid = info["extra"]["hosts"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    answer = wait_until(lambda: answers(url), what="the supervisor to restart the runtime")
    assert answer["version"] == "v1" and answer["pid"] != pid

    # as after a reboot: supervisor and runtime gone; status says so, and deploying the same
    # release starts it again (the README's advice)
    runtime = answer["pid"]
    supervisor = int(Path(f"/proc/{runtime}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(supervisor, signal.SIGKILL)
    os.kill(runtime, signal.SIGKILL)
    wait_until(lambda: not answers(url), what="the release to be down")
    down = service.status(manifest, "box", state)
    assert down["status"] != "READY" and down["extra"]["hosts"][0]["status"] != "READY"
    set_version(manifest, "v1")                     # the manifest of the release that served
    again = service.deploy(manifest, "box", state)
    assert again.release == down["release"] == first.release
    assert again.extra["hosts"][0]["status"] == "deployed"
    assert again.extra["transfer"]["files_sent"] == 0   # everything was still on the host
    assert predict(url)["version"] == "v1"

    service.delete(manifest, "box", state)
    assert not remote.exists(), list(remote.rglob("*"))[:10]
    assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1]))
    service.delete(manifest, "box", state)              # again: nothing there, nothing left
    assert not remote.exists()


def _follow_sees_a_new_request(manifest, state, url, remote) -> None:
    """``logs --follow`` streams new lines, and its process on the host ends with the client."""
    import queue
    lines: queue.Queue = queue.Queue()
    follower = service.logs(manifest, "box", state, follow=True, lines=1)

    def pump() -> None:                                # iterated and closed in one thread
        for count, line in enumerate(follower):
            lines.put(line)
            if count and "POST /predict" in line:      # a new request, not the history line
                break
        follower.close()
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    lines.get(timeout=20)                              # the history line: following has begun
    predict(url, x=(7,))
    thread.join(20)
    assert not thread.is_alive(), "the predict never showed up in the followed log"

    def helper_gone() -> bool:
        for entry in Path("/proc").iterdir():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(remote).encode() in b" ".join(cmd) and b"logs" in cmd:
                return False
        return True
    wait_until(helper_gone, 10, "the host's `logs --follow` process to end with the client")


def test_non_root_user_deploys_into_its_home(sshd_user_host, tmp_path, monkeypatch):
    base = Path(sshd_user_host.home) / ".mlserve"
    target = target_for(sshd_user_host, "~/.mlserve", free_port())
    manifest = make(tmp_path, target, name="echo-user")
    edit(manifest, secrets=["MLSV_TOKEN"])
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("MLSV_TOKEN", secret)
    state = tmp_path / "state"
    first = service.deploy(manifest, "box", state)
    pid = first.extra["hosts"][0]["pid"]
    uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
    assert int(uid) == int(sshd_user_host.run("id -u"))
    # the secret reached the model's environment, and no file on the host or in the journal
    assert f"MLSV_TOKEN={secret}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    for root in (base, state):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert secret.encode() not in path.read_bytes(), path
    assert first.extra["hosts"][0]["base_dir"] == str(base)
    with VersionPoller(first.url) as poller:
        set_version(manifest, "v2")
        service.deploy(manifest, "box", state)
    assert poller.failures == [] and poller.versions == ["v1", "v2"]
    service.delete(manifest, "box", state)
    assert not base.exists()


def test_failed_health_check_and_failed_smoke_keep_the_old_release(sshd_host, tmp_path):
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port()))
    state = tmp_path / "state"
    first = service.deploy(manifest, "box", state)
    failed = deploy_failing_load(manifest, state, first.url)
    assert failed.hosts[0]["status"] == "failed"
    assert failed.hosts[0]["release"] == first.release
    with VersionPoller(first.url) as poller:
        edit(manifest, env={"FACTOR": "3"}, smoke=[{"input": {"x": [1]}, "expect": {"y": [2]}}])
        with pytest.raises(DeployError, match="smoke case 1: expected"):
            service.deploy(manifest, "box", state)
    assert poller.failures == [] and poller.versions == ["v1"]
    info = service.status(manifest, "box", state)
    assert (info["status"], info["release"]) == ("READY", first.release)
    assert [r["outcome"] for r in info["releases"][:3]] == ["failed", "failed", "serving"]
    service.delete(manifest, "box", state)


def test_connection_cut_mid_upload_resumes_and_old_release_keeps_answering(sshd_host, tmp_path):
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port()))
    state = tmp_path / "state"
    first = service.deploy(manifest, "box", state)
    big = manifest.parent / "weights.bin"
    size = 48 << 20
    with open(big, "wb") as fh:
        fh.write(os.urandom(size))
    partial = remote / "objects" / "partial"
    killed = []

    def cut_when_uploading() -> None:
        def growing():
            return [p for p in partial.glob("*") if p.stat().st_size > (4 << 20)]
        try:
            wait_until(growing, timeout=30, what="the upload to start")
        except AssertionError:
            return
        killed.extend(sshd_host.kill_sessions())

    with VersionPoller(first.url) as poller:
        cutter = threading.Thread(target=cut_when_uploading)
        cutter.start()
        with pytest.raises(MlserveError) as failed:
            service.deploy(manifest, "box", state)
        cutter.join()
        assert killed, "the upload finished before the connection could be cut"
        assert failed.value.exit_code == 1
        assert "during the upload" in failed.value.message
        kept = sum(p.stat().st_size for p in partial.glob("*"))
        assert 0 < kept < size
        assert health(first.url)["release"] == first.release

        second = service.deploy(manifest, "box", state)
        sent = second.extra["transfer"]["file_bytes_sent"]
        assert sent == size - kept, (sent, size, kept)      # resumed, not restarted
        assert health(first.url)["release"] == second.release
    assert poller.failures == [], poller.failures[:5]
    assert poller.versions == ["v1"]                        # same model code, new release
    service.delete(manifest, "box", state)
    assert not remote.exists()


def test_model_requirements_get_a_venv_per_requirement_set_reused_across_releases(
        sshd_host, tmp_path):
    """The host builds a venv for the model's requirements (here a wheel shipped in the bundle,
    as the test hosts are offline) and reuses it until the requirement lines change."""
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port()), model="withreqs",
                    name="echo-reqs")
    state = tmp_path / "state"

    def venvs() -> list[str]:
        return sorted(p.name for p in (remote / "venvs").iterdir() if p.is_dir())

    first = service.deploy(manifest, "box", state)
    answer = predict(first.url)
    assert answer["answer"] == 42 and f"{remote}/venvs/" in answer["tiny"]
    [venv] = venvs()
    set_version(manifest, "v2")
    service.deploy(manifest, "box", state)
    assert venvs() == [venv] and predict(first.url)["version"] == "v2"
    requirements = manifest.parent / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("mlsvtiny==1.0", "mlsvtiny>=1.0"))
    service.deploy(manifest, "box", state)
    assert len(venvs()) == 2 and predict(first.url)["answer"] == 42
    service.delete(manifest, "box", state)
    assert not remote.exists()


def test_jump_host_and_ssh_agent(sshd_host, sshd_user_host, tmp_path, monkeypatch):
    """The user host is reached through the root host as bastion; both keys come from a real
    ssh-agent (no identity_file)."""
    agent_bin = require_tool("ssh-agent", "ssh-agent", "openssh-client")
    add_bin = require_tool("ssh-agent", "ssh-add", "openssh-client")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen([agent_bin, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 10, "ssh-agent")
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for key in (sshd_host.key_path, sshd_user_host.key_path):
            subprocess.run([add_bin, str(key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        known = tmp_path / "known_hosts"
        known.write_text(sshd_host.known_hosts.read_text() + sshd_user_host.known_hosts.read_text())
        target = target_for(sshd_user_host, "~/.mlserve", free_port(), identity_file=None,
                            known_hosts=str(known),
                            jump_host=f"{sshd_host.user}@{sshd_host.host}:{sshd_host.port}")
        manifest = make(tmp_path, target, name="echo-jump")
        state = tmp_path / "state"
        bastion_logins = sshd_host.log_path.read_text().count("Accepted publickey")
        result = service.deploy(manifest, "box", state)
        assert predict(result.url)["version"] == "v1"
        assert sshd_host.log_path.read_text().count("Accepted publickey") > bastion_logins
        # and with the bastion gone, the target is unreachable: the route really goes through it
        edit_target(manifest, jump_host=f"{sshd_host.user}@127.0.0.1:{free_port()}")
        with pytest.raises(MlserveError, match="refused the connection"):
            service.deploy(manifest, "box", state)
        edit_target(manifest, jump_host=f"{sshd_host.user}@{sshd_host.host}:{sshd_host.port}")
        service.delete(manifest, "box", state)
    finally:
        agent.terminate()
        agent.wait(10)


def test_cli_deploy_json_reports_hosts_and_errors_exit_codes(sshd_host, tmp_path, capsys):
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port()))
    state = str(tmp_path / "state")
    done = run_cli(capsys, "deploy", "box", "-f", str(manifest), "--state", state, "--json")
    assert done.code == 0, done.err
    out = json.loads(done.out)
    assert out["extra"]["hosts"][0]["host"] == f"root@127.0.0.1:{sshd_host.port}" or \
        out["extra"]["hosts"][0]["host"].endswith(f"@127.0.0.1:{sshd_host.port}")
    assert set(out["extra"]["hosts"][0]) >= {"host", "status", "release", "reason"}

    edit_target(manifest, known_hosts=str(sshd_host.wrong_known_hosts))
    changed = run_cli(capsys, "status", "box", "-f", str(manifest), "--state", state, "--json")
    assert json.loads(changed.out)["extra"]["hosts"][0]["status"] == "UNREACHABLE"
    failed = run_cli(capsys, "deploy", "box", "-f", str(manifest), "--state", state)
    assert failed.code == 3
    assert "host key CHANGED" in failed.err and "ssh-keygen -R" in failed.err

    edit_target(manifest, known_hosts=str(sshd_host.known_hosts))
    gone = run_cli(capsys, "delete", "box", "-y", "-f", str(manifest), "--state", state)
    assert gone.code == 0, gone.err


def test_a_base_dir_that_cannot_be_created_names_the_fix(sshd_host, tmp_path):
    manifest = make(tmp_path, target_for(sshd_host, Path("/proc/mlserve-cannot-exist"), free_port()))
    with pytest.raises(MlserveError) as failed:
        service.deploy(manifest, "box", tmp_path / "state")
    assert "cannot install mlserve's helper" in failed.value.message
    assert "base_dir is writable" in failed.value.fix and "/proc/mlserve-cannot-exist" in failed.value.details
