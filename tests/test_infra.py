"""Proof that the real-component fixtures in tests/infra work (see tests/README-infra.md)."""

from __future__ import annotations

import io
import socket
import subprocess
import time
import uuid

import pytest

from tests.infra.net import free_port, port_open, wait_for_port
from tests.infra.policy import require, require_module

require_module("tests/test_infra.py", "paramiko", "paramiko")
import paramiko  # noqa: E402


# --- helpers that start nothing -------------------------------------------------------------

def test_free_port_is_bindable_and_wait_for_port_sees_a_listener():
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert wait_for_port("127.0.0.1", port, timeout=2) < 2
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.2)


def test_require_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="thing unavailable: gone"):
        require("thing", "gone")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require("thing", "gone")


# --- sshd -----------------------------------------------------------------------------------

def test_sshd_host_runs_a_command_with_strict_host_key_checking(sshd_host):
    assert sshd_host.known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd_host.port} ssh-ed25519 ")
    assert sshd_host.run("echo ok") == "ok\n"


def test_sshd_host_works_with_the_openssh_client(sshd_host):
    done = subprocess.run(sshd_host.ssh_argv("echo", "ok"), capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_sshd_host_sftp_round_trip(sshd_host):
    name = f"{sshd_host.home}/mlsv-infra-{uuid.uuid4().hex}"
    with sshd_host.connect() as client, client.open_sftp() as sftp:
        sftp.putfo(io.BytesIO(b"payload"), name)
        assert sftp.open(name).read() == b"payload"
        sftp.remove(name)


def test_sshd_host_refuses_a_changed_host_key(sshd_host):
    with pytest.raises(paramiko.BadHostKeyException):
        sshd_host.connect(known_hosts=sshd_host.wrong_known_hosts)


def test_sshd_host_refuses_an_unauthorised_client_key(sshd_host):
    with pytest.raises(paramiko.AuthenticationException):
        sshd_host.connect(key_path=sshd_host.unauthorized_key_path)


def test_sshd_user_host_logs_in_as_a_non_root_user(sshd_user_host):
    assert sshd_user_host.run("id -un").strip() == sshd_user_host.user
    if sshd_user_host.user != "root":
        assert sshd_user_host.run("id -u").strip() != "0"
    assert sshd_user_host.run("cd && pwd").strip() == sshd_user_host.home


# --- fleet ----------------------------------------------------------------------------------

def test_ssh_fleet_hosts_are_separate_namespaces(ssh_fleet):
    assert len(ssh_fleet) == 4
    assert len({host.host for host in ssh_fleet}) == 4
    for host in ssh_fleet:
        assert host.known_hosts == ssh_fleet.known_hosts
        assert host.run("echo ok") == "ok\n"
        assert f"inet {host.host}/24" in host.run("ip -o -4 addr show eth0")


@pytest.mark.parametrize("ssh_fleet", [3], indirect=True)
def test_ssh_fleet_size_is_a_parameter(ssh_fleet):
    assert [host.run("echo ok") for host in ssh_fleet] == ["ok\n"] * 3


def test_ssh_fleet_kill_sessions_cuts_an_open_connection(ssh_fleet):
    host = ssh_fleet[1]
    with host.connect() as client:
        _, stdout, _ = client.exec_command("sleep 30")
        time.sleep(0.3)
        assert host.kill_sessions()
        deadline = time.monotonic() + 10
        while client.get_transport().is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.get_transport().is_active()
    assert host.run("echo ok") == "ok\n"  # the listener survived
    assert ssh_fleet[0].run("echo ok") == "ok\n"  # and other hosts were untouched


def test_ssh_fleet_host_can_go_down_and_come_back(ssh_fleet):
    host = ssh_fleet[2]
    host.stop()
    try:
        assert not port_open(host.host, host.port)
        assert ssh_fleet[3].run("echo ok") == "ok\n"
    finally:
        host.start()
    assert host.run("echo ok") == "ok\n"


# --- docker ---------------------------------------------------------------------------------

def test_dockerd_answers_the_sdk(dockerd):
    assert dockerd.client().ping()
    assert dockerd.network_mode == "host"


def test_base_image_builds_and_runs_python(dockerd, base_image, tmp_path):
    assert base_image.python_version.startswith("3.11")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image.ref}\n"
        "RUN python3 -c 'print(1)' > /answer\n"
        'CMD ["python3", "-c", "print(open(\'/answer\').read().strip())"]\n'
    )
    client = dockerd.client()
    image, _ = client.images.build(path=str(tmp_path), tag="mlsv-infra/answer:1",
                                   network_mode="host", rm=True)
    assert client.containers.run(image.id, network_mode="host", remove=True) == b"1\n"


def test_registry_push_and_pull_back(dockerd, registry, tmp_path):
    (tmp_path / "hello").write_text("hello\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    client = dockerd.client()
    ref = f"{registry.address}/mlsv-infra/hello"
    client.images.build(path=str(tmp_path), tag=f"{ref}:v1", network_mode="host", rm=True)
    events = list(client.images.push(ref, tag="v1", stream=True, decode=True))
    assert not [event for event in events if "error" in event], events
    pushed_digest = next(e["aux"]["Digest"] for e in events if "aux" in e)
    client.images.remove(f"{ref}:v1")
    pulled = client.images.pull(ref, tag="v1")
    assert f"{ref}@{pushed_digest}" in pulled.attrs["RepoDigests"]


# --- cloud-init -----------------------------------------------------------------------------

def test_cloud_init_schema_accepts_valid_and_rejects_invalid(cloud_init_schema, tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("#cloud-config\npackages: [python3]\nruncmd:\n  - [echo, ok]\n")
    bad.write_text("#cloud-config\npackages: 5\n")
    assert cloud_init_schema.validate(good).returncode == 0
    result = cloud_init_schema.validate(bad)
    assert result.returncode == 1
    assert "packages" in result.stdout + result.stderr
